// I2V-Adapter panel: hover hints, the on/off status in its title, the denoising-strength link in img2img,
// and the target of the "Send to I2V-Adapter" buttons. Everything is looked up by the panel's element ids
// (txt2img_i2v_adapter_*, img2img_i2v_adapter_*); other elements are only read, never restyled.

(function() {
    var TABS = ["txt2img", "img2img"];

    // Hover hints, as the WebUI's hints.js gives them (the title attribute), keyed by control.
    var HINTS = {
        "enable": "Opening this panel switches I2V-Adapter on (the tick in the title): the next Generate makes a video " +
            "that starts with the picture. Untick it to make plain pictures again.",
        "image": "Frame 0 of the video. In img2img it may stay empty: the img2img picture is used. It is resized to the " +
            "generation size as img2img resizes; transparency is put on white.",
        "model": "Adapter weights from models/I2V-Adapter. i2v_module.pth is the official trained adapter; " +
            "'none: training-free' needs no file and keeps the picture's look less strongly.",
        "refresh": "Scan models/I2V-Adapter (and the folder set in Settings) for weight files again.",
        "preset": "Sets t0 and p together. official: t0 1.0, p 0.5 (the released code). steady: t0 0.7, p 1.0 " +
            "(least motion). lively: t0 1.0, p 0.9 (most motion). 'custom' once you move t0 or p yourself.",
        "scale": "Strength of the attention to frame 0 in every self-attention layer. 0 = off, 1 = as trained.",
        "ip_adapter": "Adds a ControlNet IP-Adapter unit with this picture, as the paper does. A1111: needs the " +
            "sd-webui-controlnet extension; Forge: its built-in ControlNet. Both need an SD1.5 IP-Adapter model " +
            "(ip-adapter-plus_sd15 preferred) in models/ControlNet.",
        "ip_adapter_weight": "Weight of that IP-Adapter unit (ControlNet's own 0 to 2 scale): in A1111 the " +
            "sd-webui-controlnet unit's weight, in Forge the built-in ControlNet unit's weight.",
        "t0": "Noise level frames 1.. start from, as a share of the schedule. In img2img it replaces the denoising " +
            "strength. Lower: steadier video, less motion.",
        "p": "Share of the picture's latent kept sharp in the prior; the rest is blurred. Higher: more motion.",
        "blur_sigma": "Blur of the prior, in latent pixels (the official value is 18). 0 = no blur.",
        "color_match": "Match the colours of every frame to frame 0 afterwards (CIELAB a/b), as the official " +
            "post-processing does; keeps colours from drifting.",
        "preview_button": "Show what frames 1.. start from for the current picture, t0, p, blur and seed, using the " +
            "loaded model's VAE. Same settings, same picture.",
        "preview_prior": "The prior: the picture's latent, partly blurred (share 1 - p), decoded.",
        "images": "Several pictures at once: one Generate makes one video per picture, in order, each starting " +
            "on its picture (the batch count becomes their number; each video gets the WebUI's next seed). The " +
            "files are named after the pictures.",
        "folder": "A folder of pictures on the server (as the img2img Batch tab takes): one video per picture, " +
            "sorted by name; unreadable files are skipped and named in the console.",
        "last_image": "Optional: the video ends exactly on this picture (frame 0 is the first image, the last " +
            "frame this one; the frames between move from one to the other). Needs 3 frames or more.",
        "loop": "The video ends on the first picture again and plays as a seamless loop: the files hold each " +
            "frame once (the repeated last frame is left out). Not together with a last frame.",
        "preview_noised": "The prior at the t0 noise level: what the sampler really starts from.",
        // The motion section, built only on Forge 2 (this extension brings its own motion modules there).
        "motion_module": "A motion module for the loaded checkpoint, from models/AnimateDiff or the folder set in " +
            "Settings: for SD1.5 AnimateDiff v1, v2, v3 (or the one inside animatediff_v15_v1_ipplus.pth) or " +
            "AnimateLCM's for 4-8 LCM steps; for SDXL AnimateDiff-SDXL or HotShot-XL (8-frame windows). Its kind " +
            "is told from its keys.",
        "motion_refresh": "Scan models/AnimateDiff (and the folder set in Settings) for motion modules again.",
        "frames": "Length of the video in frames (2 to 64); frame 0 is the picture. Videos longer than the " +
            "context length are made in overlapping windows.",
        "fps": "Frames per second of the GIF, MP4, WEBM and WEBP files.",
        "context_length": "Frames the motion module sees at once (one window). 0 = the module's limit (24 for v1, " +
            "32 for v2 and v3). Every window also attends to frame 0.",
        "context_overlap": "Frames shared by neighbouring windows; those frames get the mean of their windows. " +
            "Must be less than the context length.",
        "formats": "Files written under the outputs folder, each with the generation's parameters: GIF, MP4, " +
            "WEBM and animated WEBP videos, and the frames as PNG. The videos are also shown (and returned) before the frames.",
        "motion_only": "From a picture: frame 0 is your picture and the adapter keeps the video close to it. Motion " +
            "only: a plain AnimateDiff video from the prompt (txt2img), or from the img2img picture noised to the " +
            "denoising strength in every frame; the picture settings hide.",
        "closed_loop": "Treat the video as a circle so it plays as a loop: windows wrap round and the last frames " +
            "lead into the first. 'loop motion and prompt travel' also travels the prompt from its last keyframe " +
            "back to the first; 'a window at every stride' adds windows for a firmer loop (slower).",
        "motion_lora": "Camera moves from AnimateDiff v2 motion LoRAs (ZoomIn, PanLeft, TiltUp, Rolling...), as " +
            "name:strength separated by commas; strengths from -2 to 2. They apply to this generation only. They " +
            "fit the v2 motion module.",
        "motion_lora_picker": "Pick a motion LoRA from models/AnimateDiff/lora to add it to the list at strength 1.",
        "motion_lora_refresh": "Scan models/AnimateDiff/lora (and the folder set in Settings) for motion LoRAs again.",
        "quality": "Quality of the MP4, WEBM and lossy WEBP files (0-100): higher is sharper and larger. 80 keeps " +
            "fine detail at a moderate size.",
        "webp_lossless": "Write the WEBP without any loss: every pixel as generated, larger files.",
    };

    function byId(id) {
        return gradioApp().getElementById(id);
    }

    function applyHints() {
        TABS.forEach(function(tab) {
            Object.keys(HINTS).forEach(function(name) {
                var element = byId(tab + "_i2v_adapter_" + name);
                if (name === "enable" && element) {
                    element = element.querySelector(".label-wrap") || element;
                }
                if (element && !element.title) {
                    element.title = HINTS[name];
                }
                // gradio 4 titles each choice of a checkbox group with its bare name: give those the hint too.
                if (element) {
                    element.querySelectorAll("input[title]").forEach(function(choice) {
                        if (choice.title === choice.name) choice.title = HINTS[name];
                    });
                }
            });
        });
    }

    function isEnabled(tab) {
        var visible = byId(tab + "_i2v_adapter_enable-visible-checkbox");
        if (visible) return visible.checked;
        var hidden = gradioApp().querySelector("#" + tab + "_i2v_adapter_enable-checkbox input");
        return Boolean(hidden && hidden.checked);
    }

    // Forge 2's "motion only" choice: a video from the prompt, no picture and no t0.
    function motionOnly(tab) {
        var chosen = gradioApp().querySelector("#" + tab + "_i2v_adapter_motion_only input:checked");
        return Boolean(chosen && chosen.value === "motion only");
    }

    function animateDiffOn(tab) {
        // sd-webui-animatediff's own checkbox; absent on WebUIs without it.
        var box = gradioApp().querySelector("#" + tab + "-ad-enable input[type=checkbox]");
        return box ? box.checked : null;
    }

    function t0Value() {
        var input = gradioApp().querySelector("#img2img_i2v_adapter_t0 input[type=number]");
        return input ? input.value : "";
    }

    function setText(element, text) {
        if (element && element.textContent !== text) element.textContent = text;
    }

    function updateStatus(tab) {
        var status = byId(tab + "_i2v_adapter_status");
        if (!status) return;
        var on = isEnabled(tab);
        var animateDiff = animateDiffOn(tab);
        var text = "";
        if (on && animateDiff === false) {
            text = "on \u2013 AnimateDiff is off: switch it on, or untick I2V-Adapter";
        } else if (on && motionOnly(tab)) {
            text = "on \u2013 Generate makes a video from the prompt (motion only)";
        } else if (on) {
            text = "on \u2013 Generate makes a video from the picture";
        }
        setText(status, text);
        status.classList.toggle("i2v-adapter-status-warning", on && animateDiff === false);
    }

    // While the panel is on in img2img, t0 sets the denoising strength: grey the slider out and say so.
    function updateDenoising() {
        var slider = byId("img2img_denoising_strength");
        if (!slider) return;
        var on = isEnabled("img2img") && !motionOnly("img2img");
        slider.classList.toggle("i2v-adapter-replaced", on);
        var note = byId("img2img_i2v_adapter_denoising_note");
        if (on && !note) {
            note = document.createElement("div");
            note.id = "img2img_i2v_adapter_denoising_note";
            slider.appendChild(note);
        }
        if (note) {
            note.style.display = on ? "" : "none";
            setText(note, on ? "I2V-Adapter is on: its t0 (" + t0Value() + ") is used instead." : "");
        }
    }

    // A refused page request ends without pictures; its sentence is the result's comment: show it as an error.
    function markRefusals() {
        TABS.forEach(function(tab) {
            var log = byId("html_log_" + tab);  // where the WebUI shows a result's comments
            if (!log) return;
            log.querySelectorAll("p.comments").forEach(function(paragraph) {
                var ours = paragraph.textContent.trim().indexOf("I2V-Adapter") === 0;
                paragraph.classList.toggle("i2v-adapter-refusal", ours);
            });
        });
    }

    function refresh() {
        applyHints();
        markRefusals();
        TABS.forEach(updateStatus);
        updateDenoising();
    }

    // Called by the WebUI after a "Send to I2V-Adapter" button (paste target "i2v_adapter") was pressed.
    window.switch_to_i2v_adapter = function() {
        if (typeof switch_to_img2img === "function") switch_to_img2img();
        var id = "img2img_i2v_adapter_enable";
        var accordion = byId(id);
        if (accordion) {
            if (accordion.visibleCheckbox && typeof inputAccordionChecked === "function") {
                if (!accordion.visibleCheckbox.checked) inputAccordionChecked(id, true);
            } else {
                var label = accordion.querySelector(".label-wrap");
                if (label && !label.classList.contains("open")) label.click();
            }
            setTimeout(function() {
                accordion.scrollIntoView({behavior: "smooth", block: "start"});
                refresh();
            }, 100);
        }
        return Array.from(arguments);
    };
    // "as the last frame": the same switch; the WebUI pastes the picture into the panel's last frame.
    window.switch_to_i2v_adapter_last = window.switch_to_i2v_adapter;

    if (typeof onUiLoaded === "function") {
        onUiLoaded(function() {
            refresh();
            // Slider drags and ticks change values without touching the DOM tree: listen for them too.
            gradioApp().addEventListener("input", refresh, true);
            gradioApp().addEventListener("change", refresh, true);
        });
    }
    if (typeof onUiUpdate === "function") {
        var pending = null;
        onUiUpdate(function() {
            if (pending) return;
            pending = setTimeout(function() {
                pending = null;
                refresh();
            }, 200);
        });
    }
})();
