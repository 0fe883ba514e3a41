"""The web page of `latentsync serve` (Gradio, mounted at / of the same FastAPI app as the API).

It submits to the same store with the same checks as `POST /v1/jobs`, then follows the job with a timer. The
faces of the video's first frame are shown boxed; clicking one picks it (a face point, as `--face-point`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from fastapi import FastAPI

from ..errors import InputError, LatentSyncError
from ..packaged import DEMO_AUDIO, DEMO_VIDEO, packaged_file
from ..pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS
from .store import JobStore
from .uploads import AUDIO_SUFFIXES, VIDEO_SUFFIXES, check_media, copy_file, discard, job_settings, stored_name

# System fonts: the default theme would have every browser fetch fonts from a third-party server.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
JOB_COLUMNS = ["id", "state", "progress", "submitted", "video", "audio", "error"]


class FacePreview:
    """Faces on a video's first frame, from one detector shared by the page's sessions."""

    def __init__(self, backend: str, checkpoint_dir: str | None):
        self.backend, self.checkpoint_dir = backend, checkpoint_dir
        self._detector = None
        self._lock = threading.Lock()

    def boxes(self, frame: np.ndarray) -> np.ndarray:
        from ..face import create_detector

        with self._lock:
            if self._detector is None:
                self._detector = create_detector(self.backend, checkpoint_dir=self.checkpoint_dir, offline=True)
            return self._detector.detect(frame).boxes

    def draw(self, video: str | None, point: tuple[float, float] | None) -> tuple[np.ndarray | None, str]:
        """The first frame with its faces boxed (the chosen one in green), and a line of text."""
        if not video:
            return None, ""
        from ..media import read_frames

        try:
            frame = next(iter(read_frames(video)))[1].copy()
        except (LatentSyncError, StopIteration):
            return None, "This file cannot be read as a video."
        boxes = self.boxes(frame)
        chosen = _box_at(boxes, point)
        for i, box in enumerate(boxes.astype(int)):
            color = (40, 200, 60) if i == chosen else (240, 160, 30)
            cv2.rectangle(frame, tuple(box[:2]), tuple(box[2:]), color, max(2, frame.shape[1] // 300))
        if len(boxes) == 0:
            text = "No face found on the first frame."
        elif chosen is not None:
            text = f"Face {chosen + 1} of {len(boxes)} chosen (click another to change)."
        else:
            text = f"{len(boxes)} face(s) found: the largest is used, or click one to choose it."
        return frame, text


def _box_at(boxes: np.ndarray, point: tuple[float, float] | None) -> int | None:
    if point is None:
        return None
    x, y = point
    inside = [i for i, b in enumerate(boxes) if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
    return inside[0] if inside else None


def _seed(text: str | None) -> int | None:
    """The seed typed on the page: empty for a random one."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"the seed must be a whole number, got {text!r}", "leave it empty for a random seed") from None


def build_page(config: Any, store: JobStore) -> gr.Blocks:
    """The Gradio Blocks of the page (config: the server's `ServerConfig`)."""
    faces = FacePreview(config.face_backend, config.checkpoint_dir)

    def submit(video, audio, version, steps, guidance, seed, point):
        if not video:
            raise gr.Error("Upload a video first (or use the demo clip).")
        if not audio:
            raise gr.Error("Upload or record the speech first.")
        folder = store.new_incoming()
        try:
            point = point or (None, None)
            settings = job_settings(int(steps), float(guidance), _seed(seed), version, point[0], point[1],
                                    versions=config.versions)
            video_file = stored_name("video", video, VIDEO_SUFFIXES)
            audio_file = stored_name("audio", audio, AUDIO_SUFFIXES)
            copy_file(video, folder / video_file, config.limits, "video")
            copy_file(audio, folder / audio_file, config.limits, "audio")
            check_media(folder / video_file, folder / audio_file, settings, config.limits)
            job = store.add(folder, video_file, audio_file, settings, Path(video).name, Path(audio).name)
        except LatentSyncError as exc:
            discard(folder)
            raise gr.Error(f"{exc.message}. {exc.hint or ''}")
        except BaseException:
            discard(folder)
            raise
        return job.id, f"Job `{job.id}` queued.", None, None

    def follow(job_id, shown):
        """Status line, result and download of the followed job (the player is only set when it changes)."""
        table = [[j.id, j.state, f"{j.progress:.0%}", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created)),
                  j.video_name or "", j.audio_name or "", j.error or ""] for j in store.list(limit=50)]
        if not job_id:
            return "No job yet.", gr.update(), gr.update(), shown, table
        job = store.get(job_id)
        if job is None:
            return f"Job `{job_id}` was removed or has expired.", None, None, None, table
        line = f"Job `{job.id}`: **{job.state}**"
        if job.state == "running":
            line += f", {job.stage or 'starting'} ({job.progress:.0%})"
        if job.error:
            line += f". {job.error}"
        if job.state == "succeeded" and job.report:
            line += f" in {sum(job.report.get('seconds', {}).values()):.1f} s (seed {job.report.get('seed')})."
        if job.state == "succeeded" and shown != job.id:
            result = str(store.result_path(job.id))
            return line, result, result, job.id, table
        if job.state != "succeeded" and shown is not None:
            return line, None, None, None, table
        return line, gr.update(), gr.update(), shown, table

    def pick_earlier(evt: gr.SelectData):
        row = evt.row_value or []
        return (row[0] if row else None), None

    with gr.Blocks(title="LatentSync", analytics_enabled=False) as page:
        gr.Markdown("# LatentSync\nUpload a video with a face and the speech it should say; the lips follow the speech.")
        job_id, shown, point = gr.State(None), gr.State(None), gr.State(None)
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                demo = gr.Button("Use the demo clip", elem_id="use-demo", size="sm")
                preview = gr.Image(label="Faces on the first frame (click one to choose it)", interactive=False,
                                   elem_id="faces", format="png")
                face_note = gr.Markdown("", elem_id="face-note")
                audio = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath", elem_id="audio-input")
            with gr.Column():
                version = gr.Dropdown(list(config.versions), value=config.versions[0], label="Version", elem_id="version")
                steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Denoising steps", elem_id="steps")
                guidance = gr.Slider(1.0, 5.0, value=DEFAULT_GUIDANCE, step=0.1, label="Guidance", elem_id="guidance")
                seed = gr.Textbox(label="Seed", placeholder="random", elem_id="seed")
                start = gr.Button("Start", variant="primary", elem_id="start")
                status = gr.Markdown("No job yet.", elem_id="status")
                result = gr.Video(label="Result", interactive=False, elem_id="result")
                download = gr.File(label="Download", interactive=False, elem_id="download")
        jobs = gr.Dataframe(headers=JOB_COLUMNS, label="Jobs (click one to show it)", interactive=False, elem_id="jobs")
        timer = gr.Timer(1.0)

        demo.click(lambda: (str(packaged_file(DEMO_VIDEO)), str(packaged_file(DEMO_AUDIO))), outputs=[video, audio])
        video.change(lambda v: (None, *faces.draw(v, None)), inputs=video, outputs=[point, preview, face_note])

        def choose(video_path, evt: gr.SelectData):
            chosen = (float(evt.index[0]), float(evt.index[1]))
            return (chosen, *faces.draw(video_path, chosen))

        preview.select(choose, inputs=video, outputs=[point, preview, face_note])
        start.click(submit, inputs=[video, audio, version, steps, guidance, seed, point],
                    outputs=[job_id, status, result, download])
        timer.tick(follow, inputs=[job_id, shown], outputs=[status, result, download, shown, jobs])
        jobs.select(pick_earlier, outputs=[job_id, shown])
    return page


def mount_page(app: FastAPI, config: Any, store: JobStore) -> None:
    """Mount the page at / (after the API routes, which keep precedence)."""
    gr.mount_gradio_app(
        app, build_page(config, store), path="/", ssr_mode=False, theme=THEME, footer_links=[],
        max_file_size=config.limits.max_upload_bytes, allowed_paths=[str(store.jobs_dir)],
    )

