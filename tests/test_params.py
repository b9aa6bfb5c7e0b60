"""The parameter object: API dicts, positional UI values, infotext round trip, presets."""
import pytest

from i2v_adapter.params import PRESETS, I2VParams, ParamsError


def test_api_dict_takes_defaults_for_missing_keys():
    params = I2VParams.from_dict({"enable": True, "t0": 0.8})
    assert params.enable and params.t0 == 0.8
    assert (params.scale, params.p, params.blur_sigma, params.color_match, params.model) == (1.0, 0.5, 18.0, True, "")


def test_unknown_keys_are_named():
    with pytest.raises(ParamsError, match="unknown parameter\\(s\\) strenght, tO"):
        I2VParams.from_dict({"enable": True, "strenght": 1, "tO": 2})


@pytest.mark.parametrize("values,message", [
    ({"t0": 1.5}, "t0 must be between 0.05 and 1.0"),
    ({"p": -0.1}, "p must be between 0.0 and 1.0"),
    ({"scale": "strong"}, "scale cannot be 'strong'"),
    ({"color_match": "maybe"}, "color_match must be true or false, got 'maybe'"),
    ({"color_match": [1, 2]}, r"color_match must be true or false, got \[1, 2\]"),
    ({"enable": 2}, "enable must be true or false, got 2"),
    ({"enable": {}}, "enable must be true or false"),
    ({"ip_adapter": 0.5}, "ip_adapter must be true or false, got 0.5"),
    ({"scale": [1.0]}, r"scale cannot be \[1.0\]; give a number"),
    ({"t0": {"value": 1}}, "t0 cannot be .*; give a number"),
    ({"p": True}, "p cannot be True"),
    ({"blur_sigma": float("nan")}, "blur_sigma must be a finite number, got nan"),
    ({"scale": "inf"}, "scale must be a finite number, got 'inf'"),
    ({"ip_adapter_weight": float("-inf")}, "ip_adapter_weight must be a finite number"),
    ({"model": 7}, "model must be a file name from the list, got 7"),
    ({"model": ["i2v_module.pth"]}, "model must be a file name from the list"),
    ({"model": "/etc/passwd"}, "not a path outside it; got '/etc/passwd'"),
    ({"model": "../../secret.pth"}, "not a path outside it"),
    ({"model": "..\\outside.safetensors"}, "not a path outside it"),
    ({"model": "C:\\models\\i2v.pth"}, "not a path outside it"),
    ({"image": 12345}, "image must be a picture .*base64.*; got int"),
    ({"image": [1, 2]}, "image must be .*; got list"),
])
def test_bad_values_are_refused_with_the_field_name(values, message):
    with pytest.raises(ParamsError, match=message):
        I2VParams.from_dict(values)


def test_strings_from_json_or_infotext_are_converted():
    params = I2VParams.from_dict({"enable": "true", "scale": "0.5", "color_match": "False"})
    assert params.enable is True and params.scale == 0.5 and params.color_match is False


def test_positional_values_follow_the_field_order():
    values = [True, None, "i2v_module.pth", 0.9, 0.7, 0.3, 12.0, False, True, 0.6]
    params = I2VParams.from_args(values)
    assert params == I2VParams(True, None, "i2v_module.pth", 0.9, 0.7, 0.3, 12.0, False, True, 0.6)
    assert I2VParams.from_args(values[:8]) == I2VParams(True, None, "i2v_module.pth", 0.9, 0.7, 0.3, 12.0, False)
    with pytest.raises(ParamsError):
        I2VParams.from_args(values + [1])


def test_infotext_round_trip():
    params = I2VParams(enable=True, model="sub/i2v_module.safetensors", scale=0.75, t0=0.85, p=0.35,
                       blur_sigma=9.5, color_match=False)
    entries = params.infotext(model_hash="0123456789")
    assert entries["I2V-Adapter hash"] == "0123456789"
    assert entries["I2V-Adapter t0"] == "0.85"
    # the WebUI writes and parses infotext values as strings
    assert I2VParams.from_infotext({k: str(v) for k, v in entries.items()}) == params


def test_training_free_round_trip_and_absent_entries():
    entries = I2VParams(enable=True).infotext()
    assert entries["I2V-Adapter model"] == "none (training-free)"
    assert I2VParams.from_infotext(entries).model == ""
    assert I2VParams.from_infotext({"Steps": "20"}) == I2VParams(enable=False)


def test_presets_are_rows_of_the_paper_table():
    assert PRESETS["official"] == {"t0": 1.0, "p": 0.5}
    steady = I2VParams(enable=True).with_preset("steady")
    assert (steady.t0, steady.p) == (0.7, 1.0)


def test_booleans_accept_zero_one_and_the_listed_words():
    params = I2VParams.from_dict({"enable": 1, "color_match": 0, "ip_adapter": "Yes"})
    assert (params.enable, params.color_match, params.ip_adapter) == (True, False, True)


def test_model_names_in_sub_folders_stay_allowed():
    assert I2VParams.from_dict({"model": "sub/i2v_module.safetensors"}).model == "sub/i2v_module.safetensors"
    assert I2VParams.from_dict({"model": "sub\\i2v_module.pth"}).model == "sub\\i2v_module.pth"


@pytest.mark.parametrize("args", ["enable", 5, b"x"])
def test_arguments_that_are_neither_a_dict_nor_a_list_are_refused(args):
    with pytest.raises(ParamsError, match="takes one dict of named values"):
        I2VParams.from_args(args)
