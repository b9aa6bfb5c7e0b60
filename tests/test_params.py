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
    ({"color_match": "maybe"}, "color_match cannot be 'maybe'"),
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
