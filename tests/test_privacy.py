"""Privacy across storage, engine and worker: what a real enroll and a real swap leave in the data home.

One module fixture runs the real thing once. Two prepare jobs go through the real worker: Alice from a 45-frame cut
of a selfie video, and "Grandpa", enrolled by Alice on his behalf, from one photo. Then a swap of a 20-frame, 192 px
cut with the `lite` model, trained for a second and a half (the job payload's ``train_seconds``; the trainer is
asked for a preview at every step so that so short a training makes one). While the worker runs, the fixture keeps
every training preview the worker stored (read back through ``Storage.read_blob``), the raw grids the trainer made
(to compare with), and a copy of every encrypted file present at each progress or checkpoint write: the clip,
resume checkpoints and previews are deleted when the job ends, but they were on disk. Each test then works on its
own copy of that data home (the key stays outside it, as by default).

- nothing stored decodes as an image or video without the key (OpenCV, Pillow, ffmpeg), job folders are gone;
- every synthetic artefact carries the visible label and the synthetic-media metadata its format can hold;
- consent with real stored faces: refusals store nothing, a revoke keeps the worker from running the job;
- forgetting an identity (by its owner, or by its subject after claiming it), a user or a guild (purge, or the grace
  period after the bot was removed) leaves no file and no row of theirs, nor their name in the database's bytes;
- retention: results expire after ``result_days``, raw uploads go once their faces are extracted unless kept,
  and a running worker applies it (expired results, servers past their grace period).

The storage-only consent rules (grants, claims, guild scoping, quotas with byte blobs) are in
tests/storage/test_storage_consent.py; this file does not repeat them.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageSequence

from common.config import Settings
from common.errors import FamswapError, NotAllowed, NotFound
from storage import IdentityStatus, JobKind, JobStatus, Storage, UploadKind, UploadStatus, open_storage
from storage.crypto import load_or_create_key
from swap_engine import video
from swap_engine.ffmpeg_bin import find_ffmpeg
from swap_engine.label import SYNTHETIC_METADATA, label_region
from worker.loop import Worker

pytestmark = pytest.mark.slow

# Discord-sized ids (snowflakes): an integer equal to one of them in any column is a reference to that person/server.
GUILD, OTHER_GUILD = 900_000_000_000_000_001, 900_000_000_000_000_002
ALICE, BOB, CAROL, GRANDPA = (310_000_000_000_000_000 + n for n in (11, 22, 33, 44))
DAY = 86400.0
RESULT_DAYS, GRACE_DAYS = 3.0, 2.0
TRAIN_SECONDS = 1.5  # below the trainer's 2 s progress period: its one (final) progress carries the preview
SIDE, FRAMES = 192, 20  # the swap target: 20 frames at 192 x 192
SQLITE_FILES = ("famswap.sqlite3", "famswap.sqlite3-wal", "famswap.sqlite3-shm", "famswap.sqlite3-journal")
# Byte strings that only appear in plaintext media, archives or checkpoints (6+ bytes: random ciphertext of a few MB
# contains none of them by chance).
PLAINTEXT_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"JFIF\x00", b"Exif\x00\x00", b"WEBPVP8", b"ftypisom",
    b"ftypmp4", b"ftypM4V", b"ustar\x00", b"ustar  ", b"data.pkl", b"\x93NUMPY",
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ the real run
@dataclass
class Media:
    selfie: Path  # Alice's enrollment video
    photo: Path  # Grandpa's enrollment photo
    target: Path  # the clip the swap puts Alice into


@dataclass
class Recorder:
    """Watches a Storage while the worker runs: after each progress or checkpoint write it keeps the job's stored
    preview (decrypted through the API), the job's file digests, a raw copy of every encrypted file in the store,
    and the job folders that exist."""

    aside: Path
    previews: dict[str, bytes] = field(default_factory=dict)  # digest -> decrypted preview image
    job_files: dict[int, set[str]] = field(default_factory=dict)  # job id -> input/checkpoint/preview digests
    copies: dict[str, Path] = field(default_factory=dict)  # digest -> copy of the encrypted file
    job_dirs: set[Path] = field(default_factory=set)

    def attach(self, store: Storage) -> None:
        for name in ("report_progress", "save_checkpoint"):
            original = getattr(store, name)

            async def watched(
                job_id: int, worker_id: str, *args: Any, _original: Any = original, **kw: Any
            ) -> Any:
                out = await _original(job_id, worker_id, *args, **kw)
                await self._look(store, job_id)
                return out

            setattr(store, name, watched)  # the worker's JobContext calls these on the instance

    async def _look(self, store: Storage, job_id: int) -> None:
        job = await store.get_job(job_id)
        refs = [job.input, job.checkpoint, job.progress.preview]
        self.job_files.setdefault(job_id, set()).update(r.digest for r in refs if r is not None)
        preview = job.progress.preview
        if preview is not None and preview.digest not in self.previews:
            self.previews[preview.digest] = await store.read_blob(preview)
        self.aside.mkdir(exist_ok=True)
        for digest, path in store.files.stored():
            if digest not in self.copies:
                self.copies[digest] = Path(shutil.copyfile(path, self.aside / digest))
        self.job_dirs.update(p for p in store.jobs_dir.iterdir() if p.is_dir())


@dataclass
class Made:
    settings: Settings
    media: Media
    alice: int
    grandpa: int
    prepare: dict[int, int]  # identity id -> its prepare job
    swap: int
    encoder: str
    theirs: dict[int, set[str]]  # identity id -> digest of every file ever stored for or from it
    recorder: Recorder
    raw_previews: list[np.ndarray]


def _cut(src: Path, dst: Path, frames: int, side: int) -> Path:
    info = video.probe(src)
    with video.VideoWriter(dst, side, side, info.fps) as writer:
        for frame in video.read_frames(src, max_frames=frames, size=(side, side)):
            writer.write(frame)
    return dst


async def _drain(store: Storage, worker: Worker) -> None:
    while (job := await store.claim(worker.worker_id)) is not None:
        await worker.run_job(store, job)
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, (job.kind, done.error)


async def _enroll_and_swap(settings: Settings, media: Media, recorder: Recorder) -> dict[str, Any]:
    async with open_storage(settings, synchronous="NORMAL") as store:
        recorder.attach(store)
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        up_a, _ = await store.add_upload(
            GUILD, alice.id, ALICE, media.selfie, kind=UploadKind.VIDEO, filename="alice-selfie.mp4"
        )
        grandpa = await store.create_identity(
            GUILD, ALICE, "Grandpa", on_behalf=True, subject_user_id=GRANDPA, consent_confirmed_by=ALICE
        )
        up_g, _ = await store.add_upload(
            GUILD, grandpa.id, ALICE, media.photo, kind=UploadKind.IMAGE, filename="grandpa-portrait.jpg"
        )
        prepare = {i.id: (await store.enqueue(GUILD, ALICE, JobKind.PREPARE, identity_ids=[i.id])).id
                   for i in (alice, grandpa)}  # fmt: skip
        worker = Worker(settings, "cpu")
        await _drain(store, worker)
        payload = {"train_seconds": TRAIN_SECONDS, "model": "lite", "clip_name": "target.mp4"}
        swap = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, payload, identity_ids=[alice.id], input=media.target
        )
        await _drain(store, worker)

        bank = await store.get_bank(GUILD)
        assert bank is not None and bank.encoder is not None and set(bank.decoders) == {alice.id}
        theirs: dict[int, set[str]] = {}
        for identity, upload, jobs in ((alice, up_a, [prepare[alice.id], swap.id]),
                                       (grandpa, up_g, [prepare[grandpa.id]])):  # fmt: skip
            enrolled = await store.get_identity(GUILD, identity.id)
            digests = {upload.content_digest, enrolled.faceset.digest, enrolled.thumbnail.digest}
            if identity.id in bank.decoders:
                digests.add(bank.decoders[identity.id].digest)
            for job_id in jobs:
                digests |= recorder.job_files.get(job_id, set())
                result = await store.get_result(GUILD, job_id, ALICE)
                digests |= {r.digest for r in (result.video, result.comparison) if r is not None}
            theirs[identity.id] = digests
    return {
        "alice": alice.id, "grandpa": grandpa.id, "prepare": prepare, "swap": swap.id,
        "encoder": bank.encoder.digest, "theirs": theirs,
    }  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, landmarker_model: Path, clips: Path,
         photos: Path) -> Made:  # fmt: skip
    root = tmp_path_factory.mktemp("privacy")
    media = Media(
        selfie=_cut(clips / "selfie_man.mp4", root / "selfie.mp4", 45, 256),
        photo=photos / "obama.jpg",
        target=_cut(clips / "selfie_woman_short.mp4", root / "target.mp4", FRAMES, SIDE),
    )
    settings = Settings(
        home=root / "home", key_file=root / "keys" / "famswap.key", model_dir=model_dir, model="lite",
        device="cpu", result_days=RESULT_DAYS, guild_grace_days=GRACE_DAYS,
    )  # fmt: skip
    recorder = Recorder(root / "seen-mid-job")
    raw_previews: list[np.ndarray] = []
    from swap_engine import train

    original_preview, original_config = train.Trainer.preview, train.TrainConfig

    def preview(self: train.Trainer) -> np.ndarray:
        grid = original_preview(self)
        raw_previews.append(grid.copy())  # the unlabelled grid, to compare the stored preview with
        return grid

    def config(**kw: Any) -> Any:
        # The swap trains with a progress every 2 s and a preview every 15 s: a 1.5 s training may end without one.
        # A progress with a preview at every step makes the worker store one whatever the machine's speed.
        return original_config(**{**kw, "progress_every_s": 0.0, "preview_every_s": 0.0})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.Trainer, "preview", preview)
        patch.setattr(train, "TrainConfig", config)  # pipeline.train_bank imports it when called
        out = asyncio.run(_enroll_and_swap(settings, media, recorder))
    return Made(settings=settings, media=media, recorder=recorder, raw_previews=raw_previews, **out)


# ------------------------------------------------------------------------------------------------ helpers
def _copy_home(made: Made, dst: Path, **changes: Any) -> Settings:
    """A private copy of the run's data home (same key, kept outside it), with some settings changed."""
    shutil.copytree(made.settings.home, dst / "home")
    return replace(made.settings, home=dst / "home", **changes)


def _files(home: Path) -> Iterator[Path]:
    return (p for p in sorted(home.rglob("*")) if p.is_file())


def _stored_names(settings: Settings) -> set[str]:
    return {p.name for p in _files(settings.files_dir)}


def _rows(db_path: Path) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [dict(row) for row in conn.execute(f"SELECT * FROM {t}")] for t in tables}
    finally:
        conn.close()


def _mentions(settings: Settings, *, ids: Collection[int] = (), identity: int | None = None,
              texts: Collection[str] = ()) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Rows that refer to a user/guild id (any column), to an identity (its id columns), or contain a text."""
    found = []
    for table, rows in _rows(settings.database_path).items():
        for row in rows:
            values = list(row.values())
            if (
                any(isinstance(v, int) and v in ids for v in values)
                or any(isinstance(v, str) and any(t in v for t in texts) for v in values)
                or (identity is not None and row.get("identity_id") == identity)
                or (identity is not None and table == "identities" and row["id"] == identity)
            ):
                found.append((table, row))
    return found


def _database_bytes(settings: Settings) -> bytes:
    return b"".join(
        settings.home.joinpath(n).read_bytes() for n in SQLITE_FILES if settings.home.joinpath(n).exists()
    )


def _openers(path: Path) -> set[str]:
    """Which readers manage to decode ``path`` as an image or a video."""
    opened = set()
    if cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None:
        opened.add("cv2.imread")
    capture = cv2.VideoCapture(str(path))
    try:
        if capture.isOpened() and capture.read()[0]:
            opened.add("cv2.VideoCapture")
    finally:
        capture.release()
    try:
        with Image.open(path) as image:
            image.load()
        opened.add("Pillow")
    except Exception:  # Pillow raises several kinds for undecodable input
        pass
    try:
        video.probe(path)
        opened.add("video.probe")
    except FamswapError:
        pass
    ffmpeg = find_ffmpeg().ffmpeg
    decode = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "null", "-"]
    if subprocess.run(decode, capture_output=True, timeout=60).returncode == 0:
        opened.add("ffmpeg")
    return opened


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------ encryption
async def test_nothing_in_the_data_home_decodes_without_the_key(made: Made, tmp_path: Path) -> None:
    settings = made.settings
    assert settings.home not in settings.key_path.parents  # the key is kept elsewhere
    # Job folders held the decrypted inputs while the jobs ran; they are gone, and no temp file is left.
    assert made.recorder.job_dirs, "the recorder never saw a job folder"
    assert not any(p.exists() for p in made.recorder.job_dirs)
    assert list(settings.jobs_dir.iterdir()) == []
    assert list((settings.files_dir / "tmp").iterdir()) == []

    stored = list(_files(settings.home))
    mid_job = [
        p for d, p in made.recorder.copies.items() if not settings.files_dir.joinpath(d[:2], d).exists()
    ]
    assert len(mid_job) >= 3  # the clip, resume checkpoints and previews existed while the jobs ran
    key_id = load_or_create_key(settings.key_path).key_id
    for path in stored + mid_job:
        data = path.read_bytes()
        if path.name not in SQLITE_FILES:
            assert data[:16] == b"famswap1" + key_id, f"{path} is not encrypted with this install's key"
        assert not [s for s in PLAINTEXT_SIGNATURES if s in data], f"{path} holds plaintext media"
        assert _openers(path) == set(), f"{path} decodes without the key"

    # The same readers do open the decrypted files (the check above is not vacuous).
    async with open_storage(settings, synchronous="NORMAL") as store:
        stored_result = await store.get_result(GUILD, made.swap, ALICE)
        alice = await store.get_identity(GUILD, made.alice)
        result = await store.decrypt_to(stored_result.video, tmp_path / "result.mp4")
        thumbnail = await store.decrypt_to(alice.thumbnail, tmp_path / "thumbnail.jpg")
    assert {"cv2.VideoCapture", "video.probe", "ffmpeg"} <= _openers(result)
    assert {"cv2.imread", "Pillow"} <= _openers(thumbnail)


# ------------------------------------------------------------------------------------------------ labels
def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _box(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return frame[y0:y1, x0:x1]


async def test_the_result_video_carries_the_label_and_the_metadata(made: Made, tmp_path: Path) -> None:
    async with open_storage(made.settings, synchronous="NORMAL") as store:
        result = await store.get_result(GUILD, made.swap, ALICE)
        out = await store.decrypt_to(result.video, tmp_path / "result.mp4")
    info = video.probe(out)
    for key, value in SYNTHETIC_METADATA.items():
        assert info.tags.get(key) == value, (key, info.tags)
    before, after = list(video.read_frames(made.media.target)), list(video.read_frames(out))
    assert len(after) == len(before) == FRAMES and after[0].shape == before[0].shape == (SIDE, SIDE, 3)
    x0, y0, x1, y1 = label_region(SIDE, SIDE)
    control = (0, 0, x1 - x0, y1 - y0)  # the same size in the opposite corner: background, only re-encoded
    for i in range(0, FRAMES, 4):
        badge = _mean_diff(_box(after[i], (x0, y0, x1, y1)), _box(before[i], (x0, y0, x1, y1)))
        elsewhere = _mean_diff(_box(after[i], control), _box(before[i], control))
        assert badge > 25 and badge > 4 * elsewhere, (i, badge, elsewhere)


async def test_the_before_after_gif_has_the_label_on_its_after_half_and_says_it_is_synthetic(
    made: Made,
) -> None:
    async with open_storage(made.settings, synchronous="NORMAL") as store:
        result = await store.get_result(GUILD, made.swap, ALICE)
        data = await store.read_blob(result.comparison)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF"
    # ffmpeg's GIF muxer writes no metadata; the worker adds the statement as a GIF comment.
    comment = gif.info.get("comment", b"")
    assert SYNTHETIC_METADATA["comment"].encode() in comment and b"trainedAlgorithmicMedia" in comment
    # Layout (video.comparison_animation): before | 4 px separator | after, from 240 px high copies of the frames,
    # then scaled to the GIF's height.
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    height, width = frames[0].shape[:2]
    scale = height / 240
    half = 240 + 4  # the "before" panel and the separator
    assert abs(width - (240 + half) * scale) <= 2
    x0, y0, x1, y1 = (round(v * 240 / SIDE * scale) for v in label_region(SIDE, SIDE))
    x0, y0, x1, y1 = x0 + 2, y0 + 2, x1 - 2, y1 - 2  # inside the badge, clear of resampling at its edge
    shift = round(half * scale)
    for frame in frames[:: max(1, len(frames) // 5)]:
        badge = _mean_diff(frame[y0:y1, shift + x0 : shift + x1], frame[y0:y1, x0:x1])
        w, h = x1 - x0, y1 - y0
        elsewhere = _mean_diff(frame[2 : 2 + h, shift + 2 : shift + 2 + w], frame[2 : 2 + h, 2 : 2 + w])
        assert badge > 25 and badge > 3 * elsewhere, (badge, elsewhere)


def test_training_previews_carry_the_label_and_the_metadata(made: Made) -> None:
    previews = made.recorder.previews
    assert previews, "no training preview was stored while the swap trained"
    assert made.raw_previews
    for digest, data in previews.items():
        image = Image.open(io.BytesIO(data))
        assert b"trainedAlgorithmicMedia" in image.info.get("xmp", b""), f"preview {digest[:12]} has no XMP"
        stored = np.asarray(image.convert("RGB"))
        height, width = stored.shape[:2]
        x0, y0, x1, y1 = label_region(width, height)
        outside = np.ones((height, width), bool)
        outside[y0:y1, x0:x1] = False
        # The grid the trainer made for it: the one that matches outside the badge (JPEG noise only).
        raw = min((r for r in made.raw_previews if r.shape == stored.shape),
                  key=lambda r: _mean_diff(r[outside], stored[outside]))  # fmt: skip
        assert _mean_diff(raw[outside], stored[outside]) < 5
        assert _mean_diff(_box(raw, (x0, y0, x1, y1)), _box(stored, (x0, y0, x1, y1))) > 25


async def test_an_enrollment_reports_real_crops_not_a_synthetic_image(made: Made) -> None:
    # A prepare job's "comparison" is the identity's thumbnail grid: real face crops from what the user sent, not
    # synthetic media, so it carries no "AI face swap" label (calling a real photo fake would be false too). The
    # numbered "which face?" sheet of a clip with several faces is the other unlabelled image, for the same reason.
    async with open_storage(made.settings, synchronous="NORMAL") as store:
        for identity_id, job_id in made.prepare.items():
            identity = await store.get_identity(GUILD, identity_id)
            result = await store.get_result(GUILD, job_id, ALICE)
            assert result.video is None and result.comparison == identity.thumbnail


# ------------------------------------------------------------------------------------------------ consent
def _snapshot(settings: Settings) -> tuple[set[str], dict[str, list[dict[str, Any]]]]:
    return _stored_names(settings), _rows(settings.database_path)


async def test_refusals_store_nothing_and_a_revoke_keeps_the_worker_off_the_job(
    made: Made, tmp_path: Path
) -> None:
    settings = _copy_home(made, tmp_path)
    payload = {"train_seconds": TRAIN_SECONDS, "model": "lite", "clip_name": "bob.mp4"}
    async with open_storage(settings, synchronous="NORMAL") as store:
        before = _snapshot(settings)
        # Bob has no grant: refused, told to ask Alice, and the clip he sent is not kept.
        with pytest.raises(NotAllowed) as refused:
            await store.enqueue(
                GUILD, BOB, JobKind.SWAP, payload, identity_ids=[made.alice], input=made.media.target
            )
        assert f"<@{ALICE}>" in refused.value.user_text() and "/share" in refused.value.user_text()
        # Enrolling someone else without confirming their permission: no row, no file.
        with pytest.raises(NotAllowed, match="permission"):
            await store.create_identity(GUILD, BOB, "Grandma", on_behalf=True, subject_user_id=CAROL)
        # Alice's identity does not exist in another server, even for Alice.
        with pytest.raises(NotFound):
            await store.enqueue(
                OTHER_GUILD, ALICE, JobKind.SWAP, payload, identity_ids=[made.alice], input=made.media.target
            )
        assert await store.list_identities(OTHER_GUILD, ALICE) == []
        assert _snapshot(settings) == before

        # A grant lets Bob queue a swap (his clip is stored, encrypted); the revoke cancels it and drops the clip.
        await store.share_identity(GUILD, made.alice, ALICE, BOB)
        job = await store.enqueue(
            GUILD, BOB, JobKind.SWAP, payload, identity_ids=[made.alice], input=made.media.target
        )
        assert job.input is not None and store.files.exists(job.input.digest)
        assert await store.unshare_identity(GUILD, made.alice, ALICE, BOB) == 1
        cancelled = await store.get_job(job.id)
        assert cancelled.status is JobStatus.CANCELLED and "no longer shared" in (cancelled.error or "")
        assert not store.files.exists(job.input.digest)
    # The real worker finds nothing to run, and no file was added.
    worker = Worker(settings, "cpu")
    await worker.run(once=True)
    assert worker.jobs_done == 0
    assert _stored_names(settings) == before[0]
    assert (await _job_status(settings, job.id)) is JobStatus.CANCELLED


async def _job_status(settings: Settings, job_id: int) -> JobStatus:
    async with open_storage(settings, synchronous="NORMAL") as store:
        return (await store.get_job(job_id)).status


# ------------------------------------------------------------------------------------------------ forgetting
FORGET_WAYS = ["identity-by-owner", "identity-by-subject", "user", "guild-purge", "guild-removed"]


@pytest.mark.parametrize("way", FORGET_WAYS)
async def test_forget_leaves_no_file_and_no_row(made: Made, tmp_path: Path, way: str) -> None:
    settings = _copy_home(made, tmp_path)
    clock = FakeClock(time.time())
    alice, grandpa = made.alice, made.grandpa
    names = {alice: ("Alice", "alice-selfie.mp4"), grandpa: ("Grandpa", "grandpa-portrait.jpg")}
    async with open_storage(settings, clock=clock, synchronous="NORMAL") as store:
        if way == "identity-by-owner":
            report = await store.forget_identity(GUILD, alice, ALICE)
            erased, kept = [alice], [grandpa]
        elif way == "identity-by-subject":
            # Grandpa, enrolled by Alice on his behalf, claims the identity about him and deletes it.
            with pytest.raises(NotAllowed):
                await store.forget_identity(GUILD, grandpa, BOB)
            assert (await store.claim_identity(GUILD, grandpa, GRANDPA)).owner_id == GRANDPA
            report = await store.forget_identity(GUILD, grandpa, GRANDPA)
            erased, kept = [grandpa], [alice]
        elif way == "user":
            report = await store.forget_user(ALICE)  # "everything about me": both identities she enrolled
            erased, kept = [alice, grandpa], []
        elif way == "guild-purge":
            report = await store.forget_guild(GUILD)
            erased, kept = [alice, grandpa], []
        else:  # the bot was removed from the server: erased once the grace period is over
            await store.schedule_guild_deletion(GUILD)
            clock.now += GRACE_DAYS * DAY - 60
            assert await store.run_due_deletions() == []
            assert store.files.exists(made.encoder)
            clock.now += 120
            assert await store.run_due_deletions() == [GUILD]
            report = None
            erased, kept = [alice, grandpa], []
        if report is not None:
            assert report.identities == len(erased) and report.files > 0
        for identity_id in kept:  # the others' faces are untouched
            identity = await store.get_identity(GUILD, identity_id)
            assert identity.faceset is not None and await store.read_blob(identity.faceset)

    # No file of the erased identities is left anywhere in the data home (uploads, face set, thumbnail, decoder,
    # previews, checkpoints, the clip, results)…
    left = {p.name for p in _files(settings.home)}
    for identity_id in erased:
        assert made.theirs[identity_id] and not made.theirs[identity_id] & left, identity_id
    # …nor a row about them or their jobs, nor their name or file names in the database's bytes.
    jobs = {made.prepare[i] for i in erased} | ({made.swap} if alice in erased else set())
    texts = {text for i in erased for text in names[i]}
    for identity_id in erased:
        assert _mentions(settings, identity=identity_id, texts=texts) == []
    rows = _rows(settings.database_path)
    assert not [r for r in rows["jobs"] if r["id"] in jobs] and not [
        r for r in rows["results"] if r["job_id"] in jobs
    ]
    database = _database_bytes(settings)
    assert not [t for t in texts if t.encode() in database]

    if way.startswith("guild"):
        # Nothing of the server is left: not the shared encoder, no row but the schema's bookkeeping.
        assert left <= set(SQLITE_FILES)
        assert {t: r for t, r in rows.items() if r and t not in ("meta", "counters", "sqlite_sequence")} == {}
        assert _mentions(settings, ids={GUILD, ALICE, GRANDPA}) == []
    else:
        # The shared encoder stays: it was trained on every face of the server, and no single face can be taken
        # out of it (README, "Privacy and consent"). It goes with the server.
        assert made.encoder in left
    if way == "user":
        assert _mentions(settings, ids={ALICE}) == []
        assert left - set(SQLITE_FILES) == {made.encoder}


# ------------------------------------------------------------------------------------------------ retention
async def test_results_expire_after_the_configured_days(made: Made, tmp_path: Path) -> None:
    settings = _copy_home(made, tmp_path)
    async with open_storage(settings, synchronous="NORMAL") as store:
        result = await store.get_result(GUILD, made.swap, ALICE)
        thumbnails = {
            (await store.get_identity(GUILD, i)).thumbnail.digest for i in (made.alice, made.grandpa)
        }
    made_at = result.created_at.timestamp()
    assert result.expires_at.timestamp() == pytest.approx(made_at + RESULT_DAYS * DAY)
    clock = FakeClock(made_at + RESULT_DAYS * DAY - 60)
    async with open_storage(settings, clock=clock, synchronous="NORMAL") as store:
        assert await store.expire_results() == 0
        clock.now += 120
        assert await store.expire_results() == 3  # two enrollments' reports and the swap
        with pytest.raises(NotFound):
            await store.get_result(GUILD, made.swap, ALICE)
    left = _stored_names(settings)
    assert result.video.digest not in left and result.comparison.digest not in left
    assert (
        thumbnails <= left
    )  # the prepare results' image is the identities' thumbnail, which stays with them
    assert _rows(settings.database_path)["results"] == []


@pytest.mark.parametrize("keep", [False, True], ids=["default", "FAMSWAP_KEEP_UPLOADS"])
async def test_raw_uploads_go_once_their_faces_are_extracted_unless_kept(
    made: Made, tmp_path: Path, keep: bool
) -> None:
    if keep:  # a fresh home with the setting on, and one real prepare job
        settings = replace(made.settings, home=tmp_path / "home", keep_uploads=True)
        async with open_storage(settings, synchronous="NORMAL") as store:
            identity = await store.create_identity(
                GUILD, ALICE, "Grandpa", on_behalf=True, consent_confirmed_by=ALICE
            )
            await store.add_upload(
                GUILD, identity.id, ALICE, made.media.photo, kind=UploadKind.IMAGE, filename="g.jpg"
            )
            await store.enqueue(GUILD, ALICE, JobKind.PREPARE, identity_ids=[identity.id])
            await _drain(store, Worker(settings, "cpu"))
        identities = [identity.id]
    else:
        settings = made.settings
        identities = [made.alice, made.grandpa]
    async with open_storage(settings, synchronous="NORMAL") as store:
        for identity_id in identities:
            assert (await store.get_identity(GUILD, identity_id)).status is IdentityStatus.READY
            (upload,) = await store.list_uploads(GUILD, identity_id)
            # The verdict stays (status, faces found, a keyed hash to recognise a resend); the photo or video only
            # with FAMSWAP_KEEP_UPLOADS.
            assert upload.status is UploadStatus.ACCEPTED and upload.faces_found > 0
            assert store.files.exists(upload.content_digest) is keep
            assert (upload.blob is not None) is keep
            if keep:
                assert await store.read_blob(upload.blob) == made.media.photo.read_bytes()
                await store.forget_identity(GUILD, identity_id, ALICE)
                assert not store.files.exists(
                    upload.content_digest
                )  # kept uploads still go with the identity


async def test_a_running_worker_applies_retention(made: Made, tmp_path: Path) -> None:
    # Nothing else calls expire_results / run_due_deletions on a schedule: the worker does, at start and hourly.
    settings = _copy_home(made, tmp_path)
    conn = sqlite3.connect(settings.database_path)
    with conn:
        conn.execute("UPDATE results SET expires_at = ?", (time.time() - 1,))  # as if RESULT_DAYS had passed
    conn.close()
    await Worker(settings, "cpu").run(once=True)
    assert _rows(settings.database_path)["results"] == []
    assert made.encoder in _stored_names(settings)  # the server itself is still there
    async with open_storage(settings, synchronous="NORMAL") as store:
        await store.schedule_guild_deletion(GUILD, after_days=0)  # removed, and the grace period is over
    await Worker(settings, "cpu").run(once=True)
    assert _stored_names(settings) == set()
    assert _rows(settings.database_path)["identities"] == [] and _rows(settings.database_path)["guilds"] == []
