"""LipSyncPipeline: lip-sync a whole video, as numbered steps around the denoising of 16-frame chunks.

Data flows one way: media in -> audio features and face track -> diffusion per chunk -> paste back -> media out.
The chunk step (`sample_chunk`) is the published sampling (SPEC sections 6 and 9), checked against the golden
vectors. `__call__` streams a whole video through it with bounded memory: the face pass keeps a few numbers per
frame, and the lip-sync pass decodes, aligns, denoises, pastes and encodes 16 frames at a time, the CPU stages in
background threads beside the model (queues of two chunks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import NoFaceError
from ..face import FaceAligner, FaceDetector, FaceTrack, detect_video_track, track_matrices
from ..media import FPS, VideoWriter, frame_schedule, read_batches
from ..memory import BufferPool, keep_freed_memory
from ..models.scheduler import load_scheduler
from ..models.step_reuse import StepReuse
from ..models.vae import decode_latents, encode_latents
from ..progress import progress_bar
from .job import LipSyncJob, LipSyncOutput, RunOptions, RunReport, check_inputs
from .mask import load_mouth_mask
from .threads import BackgroundWorker, StageTimer, prefetch

CHUNK_FRAMES = 16  # frames per U-Net call: the temporal layers were trained on 16 (their encoding allows 24)
_SCHEDULER_KINDS = {"DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm++"}


@dataclass(frozen=True)
class FramePlan:
    """Which video frame each output frame shows, and how each video frame's face is aligned."""

    schedule: np.ndarray  # (output frames,) video frame index (cut or ping-pong)
    present: np.ndarray  # (video frames,) a face to regenerate
    matrices: np.ndarray  # (video frames, 2, 3) alignment matrices, NaN where no face
    latents: torch.Tensor | None = None  # from an avatar: conditioning latents of the frames with a face, in order


@dataclass
class Chunk:
    """Up to 16 consecutive output frames on their way through the lip-sync stages."""

    start: int  # first output frame
    frames: np.ndarray  # (n, H, W, 3) uint8 video frames shown
    source: np.ndarray  # (n,) their video frame indices
    present: np.ndarray  # (n,) whether each has a face to regenerate
    faces: torch.Tensor | None  # (k, 3, R, R) uint8 aligned faces of the k frames with a face, on the model's device
    audio: torch.Tensor  # (k, 50, C) their audio tokens
    conditioning: torch.Tensor | None = None  # (k, 9, R/8, R/8) from an avatar, else computed with the VAE
    generated: torch.Tensor | None = None  # (k, 3, R, R) float in [-1, 1]: the regenerated faces, on the device


class LipSyncPipeline:
    """Audio-driven lip sync with a LatentSync U-Net, a diffusers AutoencoderKL and a diffusers scheduler.

    Build it from components, or with `LipSyncPipeline.from_pretrained("1.6")` for the published weights.
    `audio_encoder` (a `latentsync.audio.WhisperFeatures`) and `face_detector` (a `FaceDetector`, or a function that
    builds one when a video first needs detection) are needed only for whole videos.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        resolution: int = 256,
        mask: np.ndarray | None = None,
        audio_encoder: Any = None,
        face_detector: FaceDetector | Callable[[], FaceDetector] | None = None,
    ):
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.scheduler = scheduler
        self.resolution = resolution
        self.audio_encoder = audio_encoder
        self.face_detector = face_detector
        mask = load_mouth_mask(resolution) if mask is None else np.asarray(mask, dtype=np.float32)
        if mask.shape != (resolution, resolution):
            raise ValueError(f"mask must be {resolution}x{resolution}, got {mask.shape}")
        self.mask = torch.from_numpy(mask)[None, None]  # (1,1,R,R), float32 on the CPU until used
        self.aligner = FaceAligner(resolution, device=self.device)

    def compile(self) -> None:
        """torch.compile the U-Net (its split forward, so that step reuse is compiled too) and the VAE decoder, once.
        Parameter names are unchanged; the first chunk pays the compilation."""
        if not getattr(self, "_compiled", False):
            self.unet.forward_split = torch.compile(self.unet.forward_split)
            self.vae.decoder.forward = torch.compile(self.vae.decoder.forward)
            self._compiled = True

    def detector(self) -> FaceDetector:
        """The face detector, built on first use (a run with a saved face track never builds it)."""
        if self.face_detector is None:
            raise ValueError("detecting faces needs the pipeline's face_detector (see from_pretrained)")
        if not isinstance(self.face_detector, FaceDetector):
            self.face_detector = self.face_detector()
        return self.face_detector

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @classmethod
    def from_pretrained(cls, version: str = "1.6", **options: Any) -> "LipSyncPipeline":
        """The published LatentSync `version` ("1.5": 256 px, "1.6": 512 px), every file checked (and fetched)
        before any model is built. Options, any part overridable by a path: see `loading.load_components`
        (checkpoint_dir, offline, device, dtype, unet_config, unet_checkpoint, vae, whisper, resolution,
        face_backend)."""
        from .loading import load_components

        return cls(**load_components(version, **options))

    # ---- one chunk -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_chunk(
        self,
        faces_uint8: torch.Tensor | np.ndarray,
        audio_windows: torch.Tensor | np.ndarray,
        init_latents: torch.Tensor,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.5,
        *,
        step_reuse: int = 1,
        scheduler: str | None = None,
        vae_slice: int | None = None,
        conditioning: torch.Tensor | None = None,
        clips: int = 1,
    ) -> torch.Tensor:
        """Regenerate the lower face of F aligned frames.

        faces_uint8 (F,3,R,R) uint8, audio_windows (F,50,C), init_latents (1,4,1,R/8,R/8) (one frame's noise,
        repeated over the frames) -> (F,3,R,R) float32 pixel values in [-1,1] where only the masked (black) region
        comes from the model. step_reuse: run the U-Net's deep branch every N-th step only (1: exact); scheduler:
        "ddim" or "dpm++" (default: the pipeline's own scheduler); vae_slice: frames decoded at once (default: all);
        conditioning: the (F,9,R/8,R/8) output of `conditioning_latents` for these faces, when already known;
        clips: the F frames are that many clips of F / clips frames one after the other, denoised as one batch.
        """
        device, dtype = self.device, self.dtype
        faces = torch.as_tensor(faces_uint8).to(device)
        num_frames = faces.shape[0]
        pixels = faces.float() / 255.0 * 2.0 - 1.0
        mask = self.mask.to(device)
        if conditioning is None:
            conditioning = self.conditioning_latents(faces)
        condition = rearrange(conditioning.to(device, dtype), "(b f) c h w -> b c f h w", b=clips)

        audio = rearrange(torch.as_tensor(audio_windows).to(device, dtype), "(b f) n c -> b f n c", b=clips)
        guided = guidance_scale > 1.0
        if guided:  # batch order [unconditional, conditional]; unconditional audio is all zeros
            audio = torch.cat([torch.zeros_like(audio), audio])
            condition = torch.cat([condition, condition])

        sampler = self.chunk_scheduler(scheduler)
        latents = init_latents.to(device, dtype).expand(clips, -1, num_frames // clips, -1, -1)
        latents = latents * sampler.init_noise_sigma
        sampler.set_timesteps(num_inference_steps, device=device)
        denoiser = StepReuse(self.unet, every=step_reuse)
        for i, t in enumerate(sampler.timesteps):
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = sampler.scale_model_input(model_input, t)
            noise = denoiser(torch.cat([model_input, condition], dim=1), t, audio, i)
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = sampler.step(noise, t, latents).prev_sample

        latents = rearrange(latents, "b c f h w -> (b f) c h w")
        # In slices of frames: the decoder's activations at 512 px are what fills a GPU's memory.
        parts = latents.split(vae_slice or num_frames)
        decoded = torch.cat([decode_latents(self.vae, part).float() for part in parts])
        return decoded * (1.0 - mask) + pixels * mask

    @torch.no_grad()
    def conditioning_latents(self, faces_uint8: torch.Tensor | np.ndarray) -> torch.Tensor:
        """What the U-Net sees of F aligned faces besides the noise, frame by frame: the mask channel, the latents of
        the masked face and the latents of the reference (whole) face, (F, 9, R/8, R/8) in the model's dtype.
        They depend only on the video, so a prepared avatar stores them."""
        device, dtype = self.device, self.dtype
        faces = torch.as_tensor(faces_uint8).to(device)
        pixels = faces.float() / 255.0 * 2.0 - 1.0
        mask = self.mask.to(device)
        masked_latents = encode_latents(self.vae, (pixels * mask).to(dtype))
        reference_latents = encode_latents(self.vae, pixels.to(dtype))
        mask_latent = F.interpolate(mask, size=masked_latents.shape[-2:], mode="nearest").expand(len(faces), -1, -1, -1)
        return torch.cat([mask_latent.to(dtype), masked_latents, reference_latents], dim=1)

    def chunk_scheduler(self, kind: str | None = None):
        """The scheduler for one chunk: the pipeline's own (None, or the same kind; `set_timesteps` resets it), or a
        new one of `kind` on the same noise schedule, made per chunk so that no multistep history carries over."""
        if kind is None or kind == _SCHEDULER_KINDS.get(type(self.scheduler).__name__):
            return self.scheduler
        return load_scheduler(dict(self.scheduler.config), kind)

    # ---- whole videos ----------------------------------------------------------------------------------------

    def __call__(
        self,
        video: str | os.PathLike | LipSyncJob,
        audio: str | os.PathLike | None = None,
        output: str | os.PathLike | None = None,
        options: RunOptions | None = None,
        **overrides: Any,
    ) -> LipSyncOutput:
        """Lip-sync `video` to the speech in `audio`; write `output`, or return the frames when it is None (meant
        for short clips: they are held in memory). `options` is a `RunOptions`; keyword overrides name its fields
        (num_inference_steps, guidance_scale, seed, selection, track, ...). A `LipSyncJob` from `check_inputs` can be
        given instead of video, audio, output and options: it is not checked again."""
        # 1. Check the inputs (before any model work).
        if isinstance(video, LipSyncJob):
            job = video
        else:
            job = check_inputs(video, audio, output, replace(options or RunOptions(), **overrides))
        if self.audio_encoder is None:
            raise ValueError("whole-video runs need the pipeline's audio_encoder (see from_pretrained)")
        if job.avatar is not None:
            job.avatar.check(self)  # made with these weights and settings, or refused before any work
        if job.options.compile:
            self.compile()
        keep_freed_memory()
        report = RunReport(output=job.output, output_frames=job.num_output_frames, video_frames=job.num_video_frames,
                           still=job.info.still, warnings=list(job.warnings))
        timer = StageTimer(report.seconds)
        # 2. Audio features of the whole speech track.
        with timer("audio"):
            features = self.encode_audio(job)
        # 3. The face track: the saved one given, or detected now.
        with timer("faces"):
            track = self.face_track(job)
        report.faces, report.face_backend = track.counts, track.backend
        # 4. Alignment matrices of every video frame, and the video frame each output frame shows.
        plan = self.plan_frames(job, track)
        # 5. Initial latents: one frame's noise, repeated for every frame of the video (as published).
        report.seed = job.options.seed if job.options.seed is not None else int(torch.seed() % 2**31)
        init_latents = self.prepare_latents(report.seed)
        # 6. The chunk loop: decode -> align -> denoise -> paste back -> encode.
        with timer("lip-sync"):
            frames = self.sync_chunks(job, features, plan, init_latents, report)
        # 7. The report.
        return LipSyncOutput(job.output, frames, report)

    def encode_audio(self, job: LipSyncJob) -> torch.Tensor:
        """Whisper features of the speech, (T, layers, width) at 50 per second."""
        _progress(job, "audio", 0, 1)
        features = self.audio_encoder.features(job.speech, segmenting=job.options.segmenting)
        _progress(job, "audio", 1, 1)
        return features

    def face_track(self, job: LipSyncJob) -> FaceTrack:
        """The face to regenerate on every video frame; NoFaceError when no frame has one."""
        options = job.options
        track = job.track
        if track is None:
            total = job.num_video_frames
            track = detect_video_track(job.video, self.detector(), options.selection, progress=options.progress,
                                       total=total, on_frame=lambda done: _progress(job, "faces", done, total))
        if options.save_track is not None:
            track.save(options.save_track)
        if not track.present.any():
            where = "the photo" if job.info.still else "any frame of"
            raise NoFaceError(
                f"no face found in {where} {job.video}",
                "check that it shows a face, or try the other detector with --face-backend",
            )
        return track

    def plan_frames(self, job: LipSyncJob, track: FaceTrack) -> FramePlan:
        avatar = job.avatar
        return FramePlan(
            schedule=frame_schedule(track.num_frames, job.num_output_frames),
            present=track.present,
            matrices=track_matrices(self.aligner, track) if avatar is None else avatar.matrices,
            latents=None if avatar is None else avatar.latents,
        )

    def prepare_latents(self, seed: int) -> torch.Tensor:
        """One frame's Gaussian latent (1, 4, 1, R/8, R/8), drawn on the CPU so that a seed means the same
        everywhere."""
        size = self.resolution // 8
        return torch.randn((1, 4, 1, size, size), generator=torch.Generator().manual_seed(seed))

    def sync_chunks(
        self, job: LipSyncJob, features: torch.Tensor, plan: FramePlan, init_latents: torch.Tensor, report: RunReport
    ) -> np.ndarray | None:
        """Stream the output frames through the lip-sync stages; returns the frames when there is no output file.

        Decoding and alignment run one thread ahead, paste-back and encoding one thread behind, the model in this
        thread; queues hold at most two chunks, so memory stays flat however long the video is.
        """
        options, busy = job.options, StageTimer(report.busy)
        # Chunks are decoded into a few reused arrays (given back once encoded), not a new 16-frame array each.
        pool = BufferPool((CHUNK_FRAMES, job.info.height, job.info.width, 3))
        batches = busy.iterate("decode", read_batches(job.video, CHUNK_FRAMES, FPS, plan.schedule, pool=pool))
        chunks = (self._align_chunk(i * CHUNK_FRAMES, frames, features, plan, busy) for i, frames in enumerate(batches))
        collected: list[np.ndarray] = []
        total = job.num_output_frames
        bar_options = {"total": total, "unit": "frame", "desc": "lip-sync", "disable": not options.progress}
        with progress_bar(**bar_options) as bar, _FrameSink(job, collected) as sink:

            def paste_and_write(chunk: Chunk) -> None:
                with busy("paste+encode"):
                    sink.write(self._paste_chunk(chunk, plan))
                pool.give(chunk.frames)

            with BackgroundWorker(paste_and_write, name="latentsync-paste") as writer:
                waiting: list[Chunk] = []  # chunks with faces, denoised together up to options.batch_chunks

                def denoise_and_submit() -> None:
                    if waiting:
                        with busy("diffusion"):
                            generated = self.sample_chunk(
                                torch.cat([c.faces for c in waiting]), torch.cat([c.audio for c in waiting]),
                                init_latents, options.num_inference_steps, options.guidance_scale,
                                step_reuse=options.step_reuse, scheduler=options.scheduler,
                                vae_slice=options.vae_slice, clips=len(waiting),
                                conditioning=None if plan.latents is None else torch.cat([c.conditioning for c in waiting]),
                            )
                        for c, faces in zip(waiting, generated.split(len(waiting[0].faces))):
                            c.generated = faces
                    for c in waiting:
                        submit(c)
                    waiting.clear()

                def submit(chunk: Chunk) -> None:
                    writer.submit(chunk)
                    bar.update(len(chunk.frames))
                    _progress(job, "lip-sync", chunk.start + len(chunk.frames), total)

                for chunk in prefetch(chunks, depth=2, name="latentsync-align"):
                    # Chunks go through the U-Net together only with the same number of faces (the last chunk of a
                    # video, or one where the face is missing on some frames, usually goes alone).
                    if waiting and (chunk.faces is None or len(chunk.faces) != len(waiting[0].faces)):
                        denoise_and_submit()
                    if chunk.faces is None:
                        submit(chunk)
                        continue
                    waiting.append(chunk)
                    if len(waiting) == options.batch_chunks:
                        denoise_and_submit()
                denoise_and_submit()
        return np.concatenate(collected) if job.output is None else None

    def _align_chunk(
        self, start: int, frames: np.ndarray, features: torch.Tensor, plan: FramePlan, busy: StageTimer
    ) -> Chunk:
        with busy("align"):
            source = plan.schedule[start : start + len(frames)]
            present = plan.present[source]
            faces = conditioning = None
            if present.any():
                batch = torch.from_numpy(frames if present.all() else frames[present])
                if self.device.type == "cuda":  # from pinned memory; the crops then stay on the GPU until pasted
                    batch = batch.pin_memory().to(self.device, non_blocking=True)
                crops = self.aligner.warp(batch, plan.matrices[source[present]])
                faces = crops.permute(0, 3, 1, 2).contiguous()
                if plan.latents is not None:  # rows of the avatar's latents: frames with a face, in order
                    conditioning = plan.latents[np.cumsum(plan.present)[source[present]] - 1]
            audio = self.audio_encoder.windows(features, len(frames), start=start)[present]
        return Chunk(start, frames, source, present, faces, audio, conditioning)

    def _paste_chunk(self, chunk: Chunk, plan: FramePlan) -> np.ndarray:
        frames = chunk.frames
        if chunk.generated is not None:
            present = chunk.present
            mats = plan.matrices[chunk.source[present]]
            if present.all():  # the usual case: straight into the chunk's frames, no copy of them
                self.aligner.paste(frames, chunk.generated, mats, inplace=True)
            else:
                frames[present] = self.aligner.paste(frames[present], chunk.generated, mats)
        return frames


def _progress(job: LipSyncJob, stage: str, done: int, total: int) -> None:
    if job.options.on_progress is not None:
        job.options.on_progress(stage, done, total)


class _FrameSink:
    """Where finished frames go: the output video (atomic, with the speech muxed in) or a list in memory."""

    def __init__(self, job: LipSyncJob, collected: list[np.ndarray]):
        self.job, self.collected = job, collected
        self.writer: VideoWriter | None = None

    def __enter__(self) -> "_FrameSink":
        job = self.job
        if job.output is not None:
            options = job.options
            self.writer = VideoWriter(job.output, job.info.width, job.info.height, fps=FPS, audio=job.speech,
                                      crf=options.crf).__enter__()
        return self

    def write(self, frames: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.write(frames)
        else:
            self.collected.append(frames.copy())

    def __exit__(self, *exc_info) -> None:
        if self.writer is not None:
            self.writer.__exit__(*exc_info)
