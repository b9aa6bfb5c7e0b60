"""IP-Adapter (content adapter) in the diffusers host: h94 files, the ipplus K/V, CFG, coexistence with the hooks."""
from dataclasses import replace

import pytest
import torch
from PIL import Image

from i2v_adapter.weights.adapter import WeightsError
from i2v_adapter.cli import main
from i2v_adapter.hooks import FirstFrameHooks, find_attn1_layers, installed_hook_count
from i2v_adapter.weights.ip_adapter import (
    IPLayerKV,
    h94_positions,
    ip_adapter_from_tensors,
    kv_for_layers,
    read_ip_adapter_file,
    with_ipplus_kv,
)
from i2v_adapter.layout import FrameLayout
from i2v_adapter.pipeline.ip_adapter import (
    IPAdapterPatch,
    build_image_projection,
    choose_ip_adapter,
    cross_attention_layers,
    encode_ip_image,
    load_image_encoder,
)
from i2v_adapter.pipeline.loading import load_model_parts
from i2v_adapter.pipeline.sampling import SamplingSettings, encode_image, make_scheduler, \
    sample_video_latents
from i2v_adapter.pipeline.text_conditioning import TextConditioning

import models
from test_pipeline import FRAMES, SIZE, STEPS, TINY_MOTION, TINY_MOTION_ARGS, tiny_motion_adapter, \
    to_original_layout, write_tiny_diffusers_folder
from weight_fixtures import SD15_DIFFUSERS_BLOCKS

ENCODER_WIDTH, ENCODER_PROJECTION = 48, 24     # tiny CLIP vision model: hidden size, image embedding
RESAMPLER_WIDTH, QUERIES = 64, 4               # diffusers' Resampler has heads of 64 channels and depth 4


# ---------------------------------------------------------------- h94 layouts


def resampler_state(width, embed_dim, output_dim, queries, make, depth=4) -> dict:
    """``image_proj`` of h94's IP-Adapter plus (``Resampler``: PerceiverAttention + FeedForward per layer)."""
    tensors = {"latents": make(1, queries, width),
               "proj_in.weight": make(width, embed_dim), "proj_in.bias": make(width),
               "proj_out.weight": make(output_dim, width), "proj_out.bias": make(output_dim),
               "norm_out.weight": make(output_dim), "norm_out.bias": make(output_dim)}
    for i in range(depth):
        attention, feed_forward = f"layers.{i}.0", f"layers.{i}.1"
        tensors.update({
            f"{attention}.norm1.weight": make(width), f"{attention}.norm1.bias": make(width),
            f"{attention}.norm2.weight": make(width), f"{attention}.norm2.bias": make(width),
            f"{attention}.to_q.weight": make(width, width), f"{attention}.to_kv.weight": make(2 * width, width),
            f"{attention}.to_out.weight": make(width, width),
            f"{feed_forward}.0.weight": make(width), f"{feed_forward}.0.bias": make(width),
            f"{feed_forward}.1.weight": make(4 * width, width), f"{feed_forward}.3.weight": make(width, 4 * width),
        })
    return tensors


def plain_state(embed_dim, output_dim, make, tokens=4) -> dict:
    """``image_proj`` of h94's plain IP-Adapter (``ImageProjModel``)."""
    return {"proj.weight": make(tokens * output_dim, embed_dim), "proj.bias": make(tokens * output_dim),
            "norm.weight": make(output_dim), "norm.bias": make(output_dim)}


def kv_state(shapes: dict[str, tuple], make) -> dict:
    """``ip_adapter``: ``N.to_k_ip.weight`` / ``N.to_v_ip.weight`` at h94's positions of the attn2 layers."""
    return {f"{position}.{part}.weight": make(*shapes[path])
            for position, path in h94_positions(shapes).items() for part in ("to_k_ip", "to_v_ip")}


def randn_maker(seed, std=0.1):
    generator = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(shape, generator=generator) * std


def flat(state: dict) -> dict:
    return {f"{part}.{key}": tensor for part, tensors in state.items() for key, tensor in tensors.items()}


def write_h94(path, state: dict):
    """``.bin``: the nested dict as h94 ships it; ``.safetensors``: the same keys flattened with dots."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(flat(state), str(path))
    else:
        torch.save(state, path)
    return path


def attn2_shapes(unet) -> dict[str, tuple]:
    return {path: tuple(m.to_k.weight.shape) for path, m in cross_attention_layers(unet).items()}


def write_image_encoder(folder, hidden_size=ENCODER_WIDTH):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(7)
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=ENCODER_PROJECTION,
    )).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ip_files(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("ip_adapter")
    checkpoint = write_tiny_diffusers_folder(root / "tiny-sd")
    motion = to_original_layout(tiny_motion_adapter().state_dict())
    motion_module = root / "mm_tiny.safetensors"
    save_file(motion, str(motion_module))
    shapes = attn2_shapes(models.diffusers_unet())
    plus = {"image_proj": resampler_state(RESAMPLER_WIDTH, ENCODER_WIDTH, models.CONTEXT_DIM, QUERIES, randn_maker(1)),
            "ip_adapter": kv_state(shapes, randn_maker(2, std=0.3))}
    # The ipplus UNet: spatial UNet, original motion module and IP-Adapter K/V by layer name, in one file.
    ipplus_kv = {f"{path}.{part}.weight": tensor for path, tensor in
                 ((path, randn_maker(3, std=0.3)(*shape)) for path, shape in shapes.items())
                 for part in ("to_k_ip", "to_v_ip")}
    ipplus = root / "animatediff_ipplus_tiny.pth"
    torch.save({**models.diffusers_unet(seed=5).state_dict(), **motion, **ipplus_kv}, ipplus)
    image = root / "image.png"
    Image.new("RGB", (SIZE, SIZE), (200, 40, 90)).save(image)
    return {
        "root": root, "checkpoint": checkpoint, "motion_module": motion_module, "image": image, "ipplus": ipplus,
        "ipplus_kv": ipplus_kv,
        "plus": write_h94(root / "ip-adapter-plus_tiny.safetensors", plus),
        "plus_bin": write_h94(root / "ip-adapter-plus_tiny.bin", plus),
        "plain": write_h94(root / "ip-adapter_tiny.bin", {
            "image_proj": plain_state(ENCODER_PROJECTION, models.CONTEXT_DIM, randn_maker(4)),
            "ip_adapter": kv_state(shapes, randn_maker(5, std=0.3))}),
        "encoder": write_image_encoder(root / "image_encoder"),
    }


@pytest.fixture(scope="module")
def ip_parts(ip_files):
    return load_model_parts(str(ip_files["checkpoint"]), str(ip_files["motion_module"]), **TINY_MOTION,
                            ip_adapter=str(ip_files["plus"]), image_encoder=str(ip_files["encoder"]))


def generate_args(files, out, *extra):
    return [str(a) for a in (
        "generate", "--image", files["image"], "--prompt", "a cat", "--checkpoint", files["checkpoint"],
        "--motion-module", files["motion_module"], "--training-free", "--frames", FRAMES, "--steps", STEPS,
        "--width", SIZE, "--height", SIZE, "--no-progress", "--out", out, *TINY_MOTION_ARGS, *extra)]


# ---------------------------------------------------------------- loading matches diffusers


@pytest.mark.parametrize("variant", ["plus", "plain"])
def test_patch_loads_h94_files_exactly_as_diffusers_and_removes_cleanly(ip_files, variant):
    """Same K/V per layer, same projection, same UNet output as diffusers' own loader; removal restores all."""
    weights = read_ip_adapter_file(ip_files[variant])
    assert weights.variant == variant
    reference = models.diffusers_unet()
    state = torch.load(ip_files["plus_bin" if variant == "plus" else "plain"], weights_only=True)
    reference._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
    unet = models.diffusers_unet()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 7, models.CONTEXT_DIM, generator=generator)
    encoder = load_image_encoder(ip_files["encoder"])
    features = encode_ip_image(encoder, variant, Image.open(ip_files["image"]), "cpu", torch.float32)
    if variant == "plus":  # penultimate hidden states of the image; uncond: of an all-zero image
        assert features.shape == (2, 1, 17, ENCODER_WIDTH) and features[0].any()
    else:  # image embeddings; uncond: zeros, as diffusers
        assert features.shape == (2, 1, ENCODER_PROJECTION) and not features[0].any()
    with torch.no_grad():
        before = unet(x, 10, context).sample
        processors = {path: m.processor for path, m in cross_attention_layers(unet).items()}
        with IPAdapterPatch(unet, weights):
            for path, module in cross_attention_layers(reference).items():
                ours = cross_attention_layers(unet)[path].processor
                assert torch.equal(ours.to_k_ip[0].weight, module.processor.to_k_ip[0].weight), path
                assert torch.equal(ours.to_v_ip[0].weight, module.processor.to_v_ip[0].weight), path
            patched = unet(x, 10, context, added_cond_kwargs={"image_embeds": [features]}).sample
            expected = reference(x, 10, context, added_cond_kwargs={"image_embeds": [features]}).sample
        after = unet(x, 10, context).sample
    assert torch.equal(patched, expected)
    assert not torch.allclose(patched, before, atol=1e-4)
    assert torch.equal(after, before)
    assert unet.encoder_hid_proj is None and "encoder_hid_proj" not in unet._modules
    assert unet.config.encoder_hid_dim_type is None
    assert all(m.processor is processors[path] for path, m in cross_attention_layers(unet).items())


def test_ip_adapter_for_another_base_model_is_refused(ip_files):
    unet = models.diffusers_unet()
    weights = read_ip_adapter_file(ip_files["plus"])
    fewer = replace(weights, positions={p: kv for p, kv in weights.positions.items() if p != 11})
    with pytest.raises(WeightsError, match="another base model"):
        IPAdapterPatch(unet, fewer)
    wide = ip_adapter_from_tensors(flat({
        "image_proj": resampler_state(RESAMPLER_WIDTH, ENCODER_WIDTH, 40, QUERIES, randn_maker(1)),
        "ip_adapter": kv_state({p: (s[0], 40) for p, s in attn2_shapes(unet).items()}, randn_maker(2))}))
    with pytest.raises(WeightsError, match="another base model"):
        IPAdapterPatch(unet, wide)


# ---------------------------------------------------------------- sampling with both adapters


def test_ip_adapter_beside_the_first_frame_hooks(ip_files, ip_parts):
    """attn2 processors and attn1 hooks together: scale 0 is bit-identical to no IP-Adapter, scale 1 is not."""
    parts = ip_parts
    image = Image.open(ip_files["image"]).convert("RGB")
    z0 = encode_image(parts.vae, image, "cpu", torch.float32)
    embeddings, _ = TextConditioning.of_parts(parts).encode(["", "a cat"], "cpu", torch.float32)
    features = encode_ip_image(parts.ip_adapter.encoder, "plus", image, "cpu", torch.float32)
    assert features.shape == (2, 1, 17, ENCODER_WIDTH)
    assert not torch.equal(features[0], features[1])  # the zero image's encoding, not the image's
    adapter = models.random_adapter(parts.unet, std=0.2)
    attn1 = find_attn1_layers(parts.unet)

    def run(ip_scale=None):
        settings = SamplingSettings(frames=FRAMES, steps=STEPS)
        with FirstFrameHooks(parts.unet, FrameLayout(FRAMES), adapter) as hooks:
            if ip_scale is None:
                return sample_video_latents(parts.unet, make_scheduler(), z0, embeddings, settings, hooks.layout), None
            with IPAdapterPatch(parts.unet, parts.ip_adapter.weights, ip_scale):
                assert find_attn1_layers(parts.unet) == attn1
                latents = sample_video_latents(parts.unet, make_scheduler(), z0, embeddings, settings, hooks.layout,
                                               image_embeds=features)
            return latents, dict(hooks.layout.stats)

    plain, _ = run()
    zero, _ = run(0.0)
    active, stats = run(1.0)
    assert torch.equal(zero, plain)
    assert not torch.allclose(active, plain, atol=1e-4)
    assert torch.equal(active[:, :, 0], z0)
    assert stats["anchored"] == len(attn1) * STEPS
    assert installed_hook_count(parts.unet) == 0 and parts.unet.encoder_hid_proj is None


def test_generate_with_ip_adapter_plus_writes_a_video(ip_files, capsys):
    out = ip_files["root"] / "ip.gif"
    args = generate_args(ip_files, out, "--ip-adapter", ip_files["plus"], "--image-encoder", ip_files["encoder"])
    assert main(args) == 0
    assert "IP-Adapter plus at 1" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.n_frames == FRAMES


def test_ipplus_file_gives_the_kv_and_the_h94_file_the_image_projection(ip_files):
    parts = load_model_parts(str(ip_files["checkpoint"]), str(ip_files["ipplus"]), **TINY_MOTION,
                             ip_adapter=str(ip_files["plus_bin"]), image_encoder=str(ip_files["encoder"]))
    weights = parts.ip_adapter.weights
    assert not weights.positions
    for path, kv in weights.layers.items():
        assert torch.equal(kv.key, ip_files["ipplus_kv"][f"{path}.to_k_ip.weight"])
        assert torch.equal(kv.value, ip_files["ipplus_kv"][f"{path}.to_v_ip.weight"])
    assert torch.equal(weights.image_proj["latents"], read_ip_adapter_file(ip_files["plus_bin"]).image_proj["latents"])
    assert any("K/V from" in note and "different from" in note for note in parts.notes)
    IPAdapterPatch(parts.unet, weights)  # fits the motion UNet's cross-attention layers


def test_which_ip_adapter_the_files_give(ip_files):
    h94 = read_ip_adapter_file(ip_files["plus"])
    ipplus = {path: IPLayerKV(h94.positions[p].key, h94.positions[p].value)
              for p, path in h94_positions(attn2_shapes(models.diffusers_unet())).items()}
    assert choose_ip_adapter(None, {}, "mm.ckpt", None) == (None, [])
    weights, notes = choose_ip_adapter(None, ipplus, "ipplus.pth", None)
    assert weights is None and "not used" in notes[0]
    with pytest.raises(WeightsError, match="image projection .*--ip-adapter"):
        choose_ip_adapter(None, ipplus, "ipplus.pth", "encoder")
    with pytest.raises(WeightsError, match="--image-encoder"):
        choose_ip_adapter(h94, {}, "mm.ckpt", None)
    weights, notes = choose_ip_adapter(h94, ipplus, "ipplus.pth", "encoder")
    assert weights.layers and "identical to" in notes[0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["garbage", "face_id", "ipplus_as_ip_adapter", "no_encoder", "encoder_not_a_folder",
                                  "encoder_of_another_width"])
def test_bad_ip_adapter_input_gives_one_sentence(ip_files, capsys, case):
    root = ip_files["root"]
    ip_adapter, encoder = ip_files["plus"], ip_files["encoder"]
    if case == "garbage":
        ip_adapter = root / "garbage.bin"
        ip_adapter.write_bytes(b"not a weights file at all")
    elif case == "face_id":
        ip_adapter = write_h94(root / "faceid.bin", {
            "image_proj": plain_state(ENCODER_PROJECTION, models.CONTEXT_DIM, randn_maker(0)),
            "ip_adapter": {"1.to_k_lora.down.weight": torch.zeros(2, 2)}})
    elif case == "ipplus_as_ip_adapter":
        ip_adapter = ip_files["ipplus"]
    elif case == "no_encoder":
        encoder = None
    elif case == "encoder_not_a_folder":
        encoder = root / "missing_encoder"
    else:
        encoder = root / "wide_encoder"
        if not encoder.exists():
            write_image_encoder(encoder, hidden_size=40)
    extra = ["--ip-adapter", ip_adapter] + (["--image-encoder", encoder] if encoder else [])
    assert main(generate_args(ip_files, root / "bad.gif", *extra)) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    expected = {"garbage": "not a readable weights file", "face_id": "not parts of an IP-Adapter",
                "ipplus_as_ip_adapter": "no image projection", "no_encoder": "needs --image-encoder",
                "encoder_not_a_folder": "not a CLIP vision model folder",
                "encoder_of_another_width": "image features of width 48"}[case]
    assert expected in lines[0]
    assert not (root / "bad.gif").exists()


# ---------------------------------------------------------------- the real SD1.5 layout


def test_sd15_sized_ip_adapter_plus_and_ipplus_kv_map_onto_the_sd15_layers():
    """h94's ip-adapter-plus_sd15 shapes (Resampler 768 wide, 16 queries, ViT-H 1280) and the ipplus K/V names."""
    shapes = {f"{block}.transformer_blocks.0.attn2": (channels, 768)
              for block, channels in SD15_DIFFUSERS_BLOCKS.items()}
    zeros = lambda *shape: torch.zeros(shape)  # noqa: E731
    weights = ip_adapter_from_tensors(flat({"image_proj": resampler_state(768, 1280, 768, 16, zeros),
                                            "ip_adapter": kv_state(shapes, zeros)}))
    assert (weights.variant, weights.tokens, weights.image_feature_dim, weights.output_dim) == ("plus", 16, 1280, 768)
    assert sorted(weights.positions) == list(range(1, 32, 2))
    by_layer = kv_for_layers(weights, shapes)
    assert by_layer["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] is weights.positions[1]
    assert by_layer["up_blocks.1.attentions.0.transformer_blocks.0.attn2"] is weights.positions[13]
    assert by_layer["mid_block.attentions.0.transformer_blocks.0.attn2"] is weights.positions[31]
    ipplus = {path: IPLayerKV(torch.zeros(shape), torch.zeros(shape)) for path, shape in shapes.items()}
    combined, note = with_ipplus_kv(weights, ipplus, "animatediff_v15_v1_ipplus.pth")
    assert "identical to" in note
    assert kv_for_layers(combined, shapes).keys() == shapes.keys()
    with pytest.raises(WeightsError, match="wrong shape"):
        kv_for_layers(weights, {path: (channels, 2048) for path, (channels, _) in shapes.items()})
    projection = build_image_projection(models.diffusers_unet(), weights)  # strict load into diffusers' Resampler
    assert sum(p.numel() for p in projection.parameters()) == sum(t.numel() for t in weights.image_proj.values())
