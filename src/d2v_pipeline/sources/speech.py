"""Speech readers: keyword clips synthesised with espeak-ng, or a Speech Commands style folder.

Synthesis (datasets.md, "Speech"): the 35 Speech Commands words spoken by speakers that are
English accents x non-breath voice variants, each clip with a random rate and pitch, placed at
a random offset in a 1 s window at 16 kHz, scaled to a random peak level, plus background noise.
Every random draw comes from one seeded generator in the parent process.

Determinism (datasets.md, traps 1-3): espeak-ng's output for a word depends on what the same
process synthesised before, and breath variants are random. So a small helper process
(``python -c``, without torch, so forking it is cheap) initialises the library once and never
synthesises itself; every clip is rendered in a freshly forked child of the helper (which
starts from the same post-initialise state), placed in its window there, and written to a
pipe; breath variants are refused. That gives bit-identical sets across runs, and the output
does not depend on the number of workers. The calling (Kedro) process never loads espeak-ng
beyond reading its version string.

Cache: the synthesised set is stored as ``<cache_dir>/clips.safetensors`` (int16 audio,
labels, speakers) plus ``<cache_dir>/clips.json`` (the generation parameters and their hash).
The key is a SHA-256 of the generation parameters, the espeak-ng version and the cache format;
the hash is written into both files. :func:`load_or_synthesize` reuses the files when both
carry the expected hash and re-synthesises (overwriting them atomically) otherwise. The worker
count is not part of the key: it does not change the output.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from d2v_pipeline.io import atomic_path, atomic_write, sha256_bytes
from d2v_pipeline.sources.labels import check_classes

log = logging.getLogger(__name__)

# The Speech Commands v2 vocabulary (Warden 2018): 20 core words + 15 auxiliary words.
SPEECH_COMMANDS_WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip

# datasets.md trap 2: these variants add random breath noise, so they differ from run to run.
BREATH_VARIANTS = frozenset(
    {"Alicia", "Demonic", "Reed", "Storm", "caleb", "f2", "f3", "f5", "sandro", "victor"}
    | {"whisper", "whisperf"}
)

CACHE_FORMAT = 1  # bump when the cached layout or the rendering code changes
_CHILD_EXIT_MESSAGES = {
    1: "the synthesis child failed",
    3: "espeak-ng does not know this voice",
    4: "espeak_Synth returned an error",
    5: "espeak-ng produced no audio",
}


@dataclass
class SpeechData:
    """Fixed-length clips before per-clip normalisation.

    Attributes:
        audio: (N, S) int16 (synthesised) or float32 in [-1, 1] (read from WAV files).
        labels: int64 (N,) word ids 0..len(class_names)-1.
        speakers: int64 (N,) speaker ids 0..len(speaker_names)-1.
        sample_rate: samples per second of ``audio``.
        suspect_labels: word folders that look like a typo of another word
            (:func:`d2v_pipeline.sources.labels.suspect_labels`), for the dataset summary.
    """

    audio: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    class_names: list[str]
    speaker_names: list[str]
    sample_rate: int
    source: str
    modality: str = "speech"
    suspect_labels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def groups(self) -> np.ndarray:
        """Speaker ids: the test split holds out whole speakers."""
        return self.speakers

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int] | np.ndarray) -> SpeechData:
        """A subset in the given order (speaker and class tables are kept whole)."""
        idx = np.asarray(indices, dtype=np.int64)
        return SpeechData(
            self.audio[idx],
            self.labels[idx],
            self.speakers[idx],
            list(self.class_names),
            list(self.speaker_names),
            self.sample_rate,
            self.source,
            suspect_labels=list(self.suspect_labels),
        )


@dataclass(frozen=True)
class SynthesisConfig:
    """Everything that determines the synthesised set (and so its cache key).

    Ranges are inclusive ``(low, high)`` pairs; each clip draws uniformly from them.
    """

    words: tuple[str, ...] = SPEECH_COMMANDS_WORDS
    accents: tuple[str, ...] = ("en-us", "en")
    variants: tuple[str, ...] = ("m1", "f1")
    repeats: int = 1  # clips per (speaker, word)
    rate_wpm: tuple[int, int] = (110, 230)
    pitch: tuple[int, int] = (20, 90)
    peak_dbfs: tuple[float, float] = (-12.0, 0.0)
    noise_dbfs: tuple[float, float] = (-60.0, -30.0)
    trim_db: float = 40.0  # silence below peak - trim_db is cut before placing the word
    sample_rate: int = 16_000
    clip_seconds: float = 1.0
    seed: int = 0

    @property
    def clip_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)

    @property
    def speaker_names(self) -> list[str]:
        return [f"{accent}+{variant}" for accent in self.accents for variant in self.variants]

    def params_hash(self, engine_version: str) -> str:
        """Cache key: SHA-256 of the parameters, the espeak-ng version and the cache format."""
        payload = {"config": asdict(self), "espeak_ng": engine_version, "format": CACHE_FORMAT}
        return sha256_bytes(json.dumps(payload, sort_keys=True).encode())


@dataclass(frozen=True)
class ClipPlan:
    """The random draws for one clip (made up front so rendering order cannot matter)."""

    word: int
    speaker: int
    rate_wpm: int
    pitch: int
    offset_fraction: float
    peak_dbfs: float
    noise_dbfs: float
    noise_seed: int


def plan_clips(cfg: SynthesisConfig) -> list[ClipPlan]:
    """Draw every clip's parameters from one generator seeded with ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    plans = []
    for speaker in range(len(cfg.accents) * len(cfg.variants)):
        for word in range(len(cfg.words)):
            for _ in range(cfg.repeats):
                plans.append(
                    ClipPlan(
                        word=word,
                        speaker=speaker,
                        rate_wpm=int(rng.integers(cfg.rate_wpm[0], cfg.rate_wpm[1] + 1)),
                        pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                        offset_fraction=float(rng.random()),
                        peak_dbfs=float(rng.uniform(*cfg.peak_dbfs)),
                        noise_dbfs=float(rng.uniform(*cfg.noise_dbfs)),
                        noise_seed=int(rng.integers(2**63 - 1)),
                    )
                )
    return plans


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def espeak_paths() -> tuple[str, str]:
    """(libespeak-ng.so, espeak-ng-data) of the espeakng_loader wheel."""
    import espeakng_loader

    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def espeak_version() -> str:
    """The espeak-ng version, read without initialising the library in this process."""
    lib = ctypes.CDLL(espeak_paths()[0])
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    return (lib.espeak_Info(None) or b"?").decode()


def variant_names() -> set[str]:
    """Voice variants shipped in espeak-ng-data/voices/!v (espeak-ng ignores unknown ones)."""
    folder = Path(espeak_paths()[1]) / "voices" / "!v"
    return {p.name for p in folder.iterdir() if p.is_file()}


class EspeakEngine:
    """espeak-ng driven through ctypes (datasets.md), living in the synthesis helper process.

    The helper initialises the library once and then only forks: every clip is synthesised
    (and placed in its window) by a fresh child, so each starts from the same state
    (datasets.md trap 3). Forking a small helper instead of the Kedro process (which holds
    torch) keeps a fork at about a millisecond.
    """

    def __init__(self) -> None:
        library_path, self.data_path = espeak_paths()
        lib = ctypes.CDLL(library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        # output 2 = AUDIO_OUTPUT_SYNCHRONOUS: samples arrive through the callback
        self.sample_rate = lib.espeak_Initialize(2, 0, self.data_path.encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data path {self.data_path}")
        self.version = (lib.espeak_Info(None) or b"?").decode()
        self._chunks: list[bytes] = []

        def collect(wav: ctypes.Array, count: int, _events: int) -> int:
            if count > 0:
                self._chunks.append(ctypes.string_at(wav, count * 2))
            return 0  # 0 = keep synthesising

        self._callback = _SYNTH_CALLBACK(collect)  # must stay referenced while the lib uses it
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _set_voice(self, voice: str) -> bool:
        return self._lib.espeak_SetVoiceByName(voice.encode()) == 0

    def _synth(self, text: str, voice: str, rate_wpm: int, pitch: int) -> np.ndarray:
        """Synthesise in *this* process: only ever called in a forked child."""
        self._chunks.clear()
        if not self._set_voice(voice):
            raise _ChildError(3)
        self._lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE, absolute
        self._lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH, absolute
        data = text.encode()
        # position 0, POS_CHARACTER=1, end 0, flags 0 (espeakCHARS_AUTO)
        if self._lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None) != 0:
            raise _ChildError(4)
        self._lib.espeak_Synchronize()
        if not self._chunks:
            raise _ChildError(5)
        return np.frombuffer(b"".join(self._chunks), dtype=np.int16)

    @staticmethod
    def _fork(work: Callable[[], bytes]) -> tuple[int, int]:
        """Run ``work`` in a forked child that writes its bytes to a pipe; (pid, read fd)."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into the caller's stack
            code = 1
            try:
                os.close(read_fd)
                view = memoryview(work())
                while view:
                    view = view[os.write(write_fd, view) :]
                code = 0
            except _ChildError as exc:
                code = exc.code
            finally:
                os._exit(code)
        os.close(write_fd)
        return pid, read_fd

    @staticmethod
    def _collect(pid: int, fd: int) -> tuple[int, bytes]:
        with os.fdopen(fd, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), data

    def unknown_voices(self, voices: Sequence[str]) -> list[str]:
        """Voices espeak-ng cannot select (each tried in a child, keeping this state pristine)."""
        unknown = []
        for voice in voices:
            code, _ = self._collect(
                *self._fork(lambda v=voice: b"" if self._set_voice(v) else _fail(3))
            )
            if code != 0:
                unknown.append(voice)
        return unknown

    def render_clips(
        self, cfg: SynthesisConfig, plans: Sequence[ClipPlan], workers: int
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(index, cropped flag byte + int16 clip bytes)`` in plan order.

        Up to ``workers`` children run at once; each synthesises one word and places it.
        """
        speakers = cfg.speaker_names
        pending = deque(enumerate(plans))
        running: deque[tuple[int, ClipPlan, int, int]] = deque()

        def work(plan: ClipPlan) -> bytes:
            voice = speakers[plan.speaker]
            raw = self._synth(cfg.words[plan.word], voice, plan.rate_wpm, plan.pitch)
            clip, cropped = place_clip(raw, self.sample_rate, plan, cfg)
            return bytes([cropped]) + clip.tobytes()

        try:
            while pending or running:
                while pending and len(running) < workers:
                    index, plan = pending.popleft()
                    running.append((index, plan, *self._fork(lambda p=plan: work(p))))
                index, plan, pid, fd = running.popleft()
                code, data = self._collect(pid, fd)
                if code != 0 or len(data) != 1 + 2 * cfg.clip_samples:
                    reason = _CHILD_EXIT_MESSAGES.get(code, f"exit status {code}")
                    raise RuntimeError(
                        f"espeak-ng could not synthesise {cfg.words[plan.word]!r} with voice "
                        f"{speakers[plan.speaker]!r} (rate {plan.rate_wpm}, pitch {plan.pitch}): "
                        f"{reason}"
                    )
                yield index, data
        finally:  # an error must not leave children behind
            for _, _, pid, fd in running:
                os.close(fd)
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass


class _ChildError(Exception):
    """Carries a forked child's exit code (see _CHILD_EXIT_MESSAGES)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fail(code: int) -> bytes:
    raise _ChildError(code)


def place_clip(
    samples: np.ndarray, source_rate: int, plan: ClipPlan, cfg: SynthesisConfig
) -> tuple[np.ndarray, bool]:
    """Turn a raw espeak clip into one fixed-length int16 clip; returns (clip, was_cropped).

    Steps: trim leading/trailing silence, resample to ``cfg.sample_rate``, put the word at
    ``offset_fraction`` of the free room in the window, scale to the peak level, add Gaussian
    background noise at ``noise_dbfs`` RMS (from the clip's own seed), quantise to int16.
    """
    from scipy.signal import resample_poly

    x = samples.astype(np.float64) / 32768.0
    loud = np.nonzero(np.abs(x) >= np.abs(x).max() * 10 ** (-cfg.trim_db / 20))[0]
    x = x[loud[0] : loud[-1] + 1]
    g = math.gcd(cfg.sample_rate, source_rate)
    x = resample_poly(x, cfg.sample_rate // g, source_rate // g)  # 22,050 -> 16,000: 320/441
    n = cfg.clip_samples
    cropped = len(x) > n
    if cropped:  # keep the start of the word: its onset carries most of the identity
        x = x[:n]
    clip = np.zeros(n)
    start = int(plan.offset_fraction * (n - len(x)))
    clip[start : start + len(x)] = x * (10 ** (plan.peak_dbfs / 20) / max(np.abs(x).max(), 1e-9))
    noise = np.random.default_rng(plan.noise_seed).standard_normal(n)
    clip += noise * 10 ** (plan.noise_dbfs / 20)
    return np.clip(np.round(clip * 32768.0), -32768, 32767).astype(np.int16), cropped


def _config_from_json(payload: dict) -> SynthesisConfig:
    return SynthesisConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in payload.items()}
    )


def _helper_main() -> None:
    """Entry point of the synthesis helper process started by :func:`synthesize_keywords`.

    Protocol: one JSON request line on stdin ``{"config": {...}, "workers": n}``; on stdout
    one JSON status line ``{"version", "sample_rate", "unknown_accents"}``, then (if every
    accent is known) one frame per clip in plan order: int64 index, a cropped-flag byte and
    the int16 clip. Errors go to stderr with a non-zero exit status.
    """
    import scipy.signal  # noqa: F401  # import once here, not in every forked child

    request = json.loads(sys.stdin.buffer.readline())
    cfg = _config_from_json(request["config"])
    engine = EspeakEngine()
    unknown = engine.unknown_voices(cfg.accents)
    out = sys.stdout.buffer
    status = {"version": engine.version, "sample_rate": engine.sample_rate}
    out.write(json.dumps({**status, "unknown_accents": unknown}).encode() + b"\n")
    out.flush()
    if unknown:
        return
    for index, data in engine.render_clips(cfg, plan_clips(cfg), int(request["workers"])):
        out.write(struct.pack("<q", index) + data)
    out.flush()


def synthesize_keywords(
    cfg: SynthesisConfig, workers: int = 2, progress: bool = True
) -> SpeechData:
    """Synthesise the whole keyword set described by ``cfg`` (see the module docstring).

    The work runs in a helper process (``python -c``) that initialises espeak-ng and forks
    one child per clip, ``workers`` at a time; this process only collects the clips.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    breath = sorted(set(cfg.variants) & BREATH_VARIANTS)
    if breath:
        raise ValueError(f"variants {breath} add random breath noise (not reproducible)")
    unknown = sorted(set(cfg.variants) - variant_names())
    if unknown:
        raise ValueError(f"variants {unknown} are not in espeak-ng-data/voices/!v")
    env = dict(os.environ)
    src_dir = str(Path(__file__).resolve().parents[2])  # so the helper imports this package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_dir, env.get("PYTHONPATH")) if p)
    # stderr goes to a file: a chatty helper must not block on a full pipe we do not read
    with tempfile.TemporaryFile() as errors:
        status, audio, cropped = _run_helper(cfg, workers, progress, env, errors)
    plans = plan_clips(cfg)
    if cropped:
        log.warning("%d of %d words were longer than the window and were cut", cropped, len(plans))
    return SpeechData(
        audio=audio,
        labels=np.array([p.word for p in plans], dtype=np.int64),
        speakers=np.array([p.speaker for p in plans], dtype=np.int64),
        class_names=list(cfg.words),
        speaker_names=cfg.speaker_names,
        sample_rate=cfg.sample_rate,
        source=f"espeak-ng {status['version']} synthesis",
    )


def _run_helper(
    cfg: SynthesisConfig, workers: int, progress: bool, env: dict[str, str], errors: IO[bytes]
) -> tuple[dict, np.ndarray, int]:
    """Start the helper, feed it the request and collect (status, int16 audio, cropped count)."""
    from tqdm.auto import tqdm

    n, samples = len(cfg.words) * len(cfg.speaker_names) * cfg.repeats, cfg.clip_samples
    helper = subprocess.Popen(
        [sys.executable, "-c", "from d2v_pipeline.sources.speech import _helper_main as m; m()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        env=env,
    )
    audio = np.zeros((n, samples), dtype=np.int16)
    cropped = 0
    try:
        assert helper.stdin and helper.stdout
        helper.stdin.write(json.dumps({"config": asdict(cfg), "workers": workers}).encode() + b"\n")
        helper.stdin.close()
        line = helper.stdout.readline()
        if not line:
            raise RuntimeError(f"espeak-ng synthesis helper failed: {_last_line(helper, errors)}")
        status = json.loads(line)
        if status["unknown_accents"]:
            raise ValueError(f"accents {status['unknown_accents']} are not espeak-ng voices")
        frame = 8 + 1 + 2 * samples
        with tqdm(total=n, desc="espeak-ng synthesis", unit="clip", disable=not progress) as bar:
            for _ in range(n):
                data = helper.stdout.read(frame)
                if len(data) != frame:
                    raise RuntimeError(
                        f"espeak-ng synthesis helper failed: {_last_line(helper, errors)}"
                    )
                (index,) = struct.unpack("<q", data[:8])
                cropped += data[8]
                audio[index] = np.frombuffer(data[9:], dtype=np.int16)
                bar.update()
        if helper.wait() != 0:
            raise RuntimeError(f"espeak-ng synthesis helper failed: {_last_line(helper, errors)}")
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
        if helper.stdout:
            helper.stdout.close()
    return status, audio, cropped


def _read_cache(audio_path: Path, meta_path: Path, expected_hash: str) -> SpeechData | None:
    """The cached set if both files carry ``expected_hash``, else None (reason logged)."""
    from safetensors import safe_open

    if not (audio_path.is_file() and meta_path.is_file()):
        log.info("no synthesis cache at %s: synthesising", audio_path)
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with safe_open(str(audio_path), framework="numpy") as fh:
            stored_hash = (fh.metadata() or {}).get("params_hash")
            arrays = {key: fh.get_tensor(key) for key in ("audio", "labels", "speakers")}
    except Exception as exc:  # a damaged cache is regenerated, never trusted
        log.warning("synthesis cache %s is unreadable (%s): synthesising again", audio_path, exc)
        return None
    if meta.get("params_hash") != expected_hash or stored_hash != expected_hash:
        log.info("synthesis parameters changed since %s was written: synthesising", audio_path)
        return None
    log.info("reusing synthesised clips from %s (params hash %s)", audio_path, expected_hash[:12])
    return SpeechData(
        audio=arrays["audio"],
        labels=arrays["labels"].astype(np.int64),
        speakers=arrays["speakers"].astype(np.int64),
        class_names=list(meta["class_names"]),
        speaker_names=list(meta["speaker_names"]),
        sample_rate=int(meta["sample_rate"]),
        source=str(meta["source"]),
    )


def load_or_synthesize(
    cfg: SynthesisConfig, cache_dir: str | Path, workers: int = 2, progress: bool = True
) -> SpeechData:
    """Reuse ``cache_dir/clips.safetensors`` when its params hash matches ``cfg``, else synthesise.

    The audio file is written before the JSON; both are atomic and both carry the hash, so an
    interrupted write is detected as a mismatch on the next run.
    """
    from safetensors.numpy import save_file

    cache_dir = Path(cache_dir)
    audio_path, meta_path = cache_dir / "clips.safetensors", cache_dir / "clips.json"
    version = espeak_version()
    expected = cfg.params_hash(version)
    cached = _read_cache(audio_path, meta_path, expected)
    if cached is not None:
        return cached
    data = synthesize_keywords(cfg, workers=workers, progress=progress)
    arrays = {"audio": data.audio, "labels": data.labels, "speakers": data.speakers}
    with atomic_path(audio_path) as tmp:
        save_file(arrays, str(tmp), metadata={"params_hash": expected})
    meta = {
        "params_hash": expected,
        "generation_parameters": asdict(cfg),
        "espeak_ng_version": version,
        "cache_format": CACHE_FORMAT,
        "class_names": data.class_names,
        "speaker_names": data.speaker_names,
        "sample_rate": data.sample_rate,
        "num_clips": len(data),
        "source": data.source,
    }
    atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info("wrote %d synthesised clips to %s", len(data), audio_path)
    return data


# Speech Commands names files <speaker hash>_nohash_<n>.wav
_SPEECH_COMMANDS_NAME = re.compile(r"^(?P<speaker>[^_]+)_nohash_\d+$")
_WAV_FORMATS = {"WAV", "WAVEX", "RF64"}


def wav_declared_frames(path: Path) -> int | None:
    """The frame count a RIFF/RF64 WAV header declares (data chunk size / block align).

    libsndfile quietly reports the frames the file really holds, so a cut file would read as
    a shorter clip (then zero-padded into a silent tail); this reads the header's own claim
    to compare. None when the header does not commit to a size (a streamed WAV's data size
    of 0 or 0xFFFFFFFF). Raises ValueError naming the file when the header is unreadable.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64", b"BW64"):
            raise ValueError(f"{path}: not a WAV file (starts with {head[:4]!r}, not b'RIFF')")
        if head[8:12] != b"WAVE":
            raise ValueError(f"{path}: RIFF file of type {head[8:12]!r}, not b'WAVE'")
        order = ">" if head[:4] == b"RIFX" else "<"
        block_align, ds64_data_size = None, None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise ValueError(f"{path}: WAV header has no 'data' chunk (file cut short?)")
            kind, size = chunk[:4], struct.unpack(f"{order}I", chunk[4:])[0]
            if kind == b"data":
                if size == 0xFFFFFFFF and ds64_data_size is not None:  # RF64: size in ds64
                    size = ds64_data_size
                if not block_align:
                    raise ValueError(f"{path}: WAV header has no 'fmt ' chunk before its data")
                return None if size in (0, 0xFFFFFFFF) else size // block_align
            body = fh.read(size + size % 2)  # chunks are padded to an even size
            if kind == b"fmt " and len(body) >= 14:
                block_align = struct.unpack(f"{order}H", body[12:14])[0]
            elif kind == b"ds64" and len(body) >= 16:
                ds64_data_size = struct.unpack("<Q", body[8:16])[0]


def read_wav(path: Path, sample_rate: int, clip_samples: int) -> np.ndarray:
    """One WAV file as float32 mono at ``sample_rate``, centre-cropped or end-padded.

    The frames read must equal the frames the header declares: a cut file (a truncated
    download) is an error naming the file and both counts, never a clip with a silent tail.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty (0 bytes); replace it or delete it")
    try:
        info = sf.info(str(path))
        if info.format not in _WAV_FORMATS:
            raise ValueError(f"{path}: is a {info.format} file, not WAV")
        declared = wav_declared_frames(path)
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except ValueError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError for corrupt files
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from exc
    if declared is not None and x.shape[0] != declared:
        raise ValueError(
            f"{path}: the WAV header declares {declared} frames but the file holds "
            f"{x.shape[0]} (cut short: an interrupted download or copy?); replace the file "
            "or delete it"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{path}: WAV file has no samples")
    x = x.mean(axis=1)  # downmix to mono
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
    if len(x) > clip_samples:
        start = (len(x) - clip_samples) // 2
        x = x[start : start + clip_samples]
    elif len(x) < clip_samples:  # Speech Commands clips shorter than 1 s are zero-padded
        x = np.pad(x, (0, clip_samples - len(x)))
    return x.astype(np.float32)


def read_wav_folder(
    root: str | Path, sample_rate: int = 16_000, clip_seconds: float = 1.0
) -> SpeechData:
    """Read ``root/<label>/<file>.wav`` laid out like Speech Commands.

    Folders starting with ``_`` or ``.`` (Speech Commands' ``_background_noise_``) are skipped.
    Speakers come from ``<speaker>_nohash_<n>.wav``; a file not named that way is its own
    speaker (so the held-out-speaker test split degrades to a random one for such files).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: WAV folder does not exist")
    class_dirs = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    if not class_dirs:
        raise ValueError(f"{root}: WAV folder is empty (expected <label>/<file>.wav)")
    clip_samples = round(sample_rate * clip_seconds)
    clips, labels, speaker_keys = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
        if not files:
            raise ValueError(
                f"{class_dir}: class folder has no .wav files; add clips or remove the folder"
            )
        for file in files:
            clips.append(read_wav(file, sample_rate, clip_samples))
            labels.append(label)
            match = _SPEECH_COMMANDS_NAME.match(file.stem)
            speaker_keys.append(match["speaker"] if match else f"{class_dir.name}/{file.stem}")
    suspects = check_classes(
        [p.name for p in class_dirs],
        np.asarray(labels, dtype=np.int64),
        where=lambda c: str(class_dirs[c]),
        remedy="Add clips to that folder, or move the clip into the folder of its word.",
    )
    speaker_names = sorted(set(speaker_keys))
    speaker_id = {name: i for i, name in enumerate(speaker_names)}
    log.info(
        "read %d clips, %d words, %d speakers from %s",
        len(clips),
        len(class_dirs),
        len(speaker_names),
        root,
    )
    return SpeechData(
        audio=np.stack(clips),
        labels=np.asarray(labels, dtype=np.int64),
        speakers=np.asarray([speaker_id[k] for k in speaker_keys], dtype=np.int64),
        class_names=[p.name for p in class_dirs],
        speaker_names=speaker_names,
        sample_rate=sample_rate,
        source=f"wav_folder:{root}",
        suspect_labels=suspects,
    )


def _last_line(process: subprocess.Popen, errors: IO[bytes]) -> str:
    """The helper's last stderr line (its exception), waiting for it to exit."""
    process.wait()
    errors.seek(0)
    lines = [ln for ln in errors.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {process.returncode}"
