"""Print the largest differences between the evaluation models and the published evaluation's parity vectors.

Usage: python scripts/eval_parity.py [tests/data/golden/eval] [--threads N]
Reads the random-weight files and vectors the tests use; prints one line per compared quantity. The thread count
changes float32 summation order, so errors differ slightly with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from latentsync.evaluation import load_hyperiqa, load_s3fd, load_syncnet_v2, mfcc, sync_confidence
from latentsync.evaluation.crops import crop_face, crop_rects, smooth_boxes
from latentsync.evaluation.hyperiqa import prepare_frames, target_scores
from latentsync.evaluation.s3fd import candidates, detection_stage, final_boxes, prior_boxes


def err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def main(folder: Path) -> None:
    show = lambda name, value: print(f"{name:48s} {value:.3g}")  # noqa: E731
    net = load_syncnet_v2(folder / "syncnet_v2_random.model")
    fwd = load_file(str(folder / "syncnet_forward.safetensors"))
    grid = cv2.imread(str(folder / "syncnet_eval_frames.webp"))
    frames = np.ascontiguousarray(grid.reshape(5, 224, 15, 224, 3).transpose(0, 2, 1, 3, 4).reshape(75, 224, 224, 3))
    lip_in = torch.stack([torch.from_numpy(frames[s : s + 5]).permute(3, 0, 1, 2).float() for s in fwd["window_start"].tolist()])
    with torch.no_grad():
        show("SyncNet v2 lip embedding", err(net.forward_lip(lip_in), fwd["lip_embed"]))
        show("SyncNet v2 audio embedding", err(net.forward_aud(fwd["mfcc_input"]), fwd["aud_embed"]))
    ref = load_file(str(folder / "syncnet_mfcc.safetensors"))
    raw = mfcc(ref["audio_int16"].numpy())
    show("MFCC raw (float64), relative", err(raw, ref["mfcc_raw"]) / float(np.abs(ref["mfcc_raw"].numpy()).max()))
    show("MFCC model input (float32)", err(raw.T[None, None].astype(np.float32), ref["mfcc_model_input"]))
    ev = load_file(str(folder / "syncnet_eval.safetensors"))
    meta = json.loads((folder / "syncnet_eval.json").read_text())
    result = sync_confidence(net, frames, ev["audio_int16"].numpy())
    show("per-offset distances", err(result.dists, ev["dists"]))
    show("mean distances", err(result.mean_dists, ev["mean_dists"]))
    show("Sync-D", abs(result.sync_d - meta["min_dist"]))
    show("Sync-C", abs(result.sync_c - meta["conf"]))
    show("offset (ours - published)", result.offset - meta["av_offset"])
    show("framewise confidence / median-filtered", max(err(result.framewise_conf, ev["framewise_conf"]),
                                                       err(result.framewise_conf_smoothed, ev["framewise_conf_medfilt"])))

    det = load_s3fd(folder / "sfd_face_random.pth")
    s3 = load_file(str(folder / "s3fd_io.safetensors"))
    frame = s3["frame_rgb_uint8"].numpy()
    x = det.prepare([frame], 0.25)
    with torch.no_grad():
        loc, conf, heads = det.net(x)
    priors = prior_boxes(tuple(x.shape[2:]), heads)
    rows = detection_stage(loc, conf, priors)[0]
    show("S3FD net input", err(x, s3["net_input"]))
    show("S3FD loc / softmax", max(err(loc, s3["loc"]), err(conf, s3["conf_softmax"])))
    show("S3FD priors", err(priors, s3["priors"]))
    show("S3FD detections (normalised rows)", err(rows, s3["detections"][0, 1, : len(rows)]))
    size = np.array([frame.shape[1], frame.shape[0]] * 2, np.float32)
    for threshold, tag in ((0.9, "090"), (0.5, "050")):
        cands, boxes = candidates(rows, threshold, size), final_boxes(rows, threshold, size)
        show(f"S3FD candidates @{threshold} (px, count {len(cands)})", err(cands, s3[f"candidates_conf{tag}"]))
        show(f"S3FD boxes @{threshold} (px, count {len(boxes)})", err(det.detect(frame, threshold), s3[f"bboxes_conf{tag}"]))

    crop = load_file(str(folder / "crop_io.safetensors"))
    s, cx, cy = smooth_boxes(crop["bbox"].numpy())
    show("crop smoothed s / x / y", max(err(s, crop["smoothed_s"]), err(cx, crop["smoothed_x"]), err(cy, crop["smoothed_y"])))
    rects = crop_rects(s, cx, cy)
    show("crop pad_and_rect", err(rects, crop["pad_and_rect"]))
    crops = [crop_face(f, rects[k]) for f, k in zip(crop["frames_bgr_uint8"].numpy(), crop["keep_index"].tolist())]
    show("crop pixels (grey levels)", err(np.stack(crops), crop["crops_bgr_uint8"]))

    iqa = load_hyperiqa(folder / "koniq_random.pkl")
    hq = load_file(str(folder / "hyperiqa_io.safetensors"))
    xin = prepare_frames(hq["frames_rgb_uint8"].numpy())
    show("HyperIQA input channel means", err(xin.double().mean((2, 3)), hq["model_input_channel_mean"]))
    with torch.no_grad():
        params = iqa.net(xin)
    show("HyperIQA hyper-network outputs", max(err(v, hq[f"paras.{k}"]) for k, v in params.items()))
    scores = target_scores(params).numpy()
    show("HyperIQA per-crop scores", err(scores, hq["per_crop_score"]))
    show("HyperIQA clip score", abs(float(scores.mean()) - float(hq["score"][0])))


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--threads" in args:
        at = args.index("--threads")
        torch.set_num_threads(int(args[at + 1]))
        del args[at : at + 2]
    main(Path(args[0]) if args else Path(__file__).parents[1] / "tests/data/golden/eval")
