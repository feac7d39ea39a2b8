"""swap_engine.video: pure ffmpeg command builders and parsers, then real ffmpeg on the shared clips.

The real tests run once per ffmpeg found: the system's on the PATH (CI installs Debian's 5.1) and the bundled
imageio-ffmpeg build. Clips are cut to a couple of seconds and frames downscaled so the whole file runs in well
under a minute per ffmpeg.
"""

from __future__ import annotations

import os
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from common.errors import EncodeError, MediaTooLarge, UnsupportedMedia
from swap_engine import video
from swap_engine.ffmpeg_bin import SNAPSHOT, FFmpegTools, bundled_ffmpeg, system_ffmpeg, unusable_because
from swap_engine.video import (
    FitPlan,
    VideoInfo,
    VideoWriter,
    comparison_animation,
    fit_to_size,
    probe,
    read_frames,
)

SCENE = "scene_woman_room_720p.mp4"
TINY = "tiny_man_noaudio.mp4"
AI_TAGS = {
    "comment": "AI face swap — synthetic media made with famswap",
    "synthetic": "true",
    "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
}


# --------------------------------------------------------------------------------------------------------------
# Pure functions: no ffmpeg runs here
# --------------------------------------------------------------------------------------------------------------

REPORT_720P = """\
[in#0 @ 0x563c0c76c040] UDTA parsing failed retrying raw
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/clips/scene.mp4':
  Metadata:
    major_brand     : mp42
    comment         : first line
                    : second line
    synthetic       : true
  Duration: 00:00:09.43, start: 0.000000, bitrate: 564 kb/s
  Stream #0:0[0x1](und): Video: h264 (Main) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1280x720 \
[SAR 1:1 DAR 16:9], 390 kb/s, 29.97 fps, 29.97 tbr, 90k tbn, start 0.852019 (default)
    Metadata:
      handler_name    : VideoHandler
    Side data:
      Display Matrix: rotation of -90.00 degrees
  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 164 kb/s, start 0.008005 \
(default)
  Stream #0:2: Video: mjpeg (Baseline), yuvj420p(pc), 600x600 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
At least one output file must be specified
"""


def test_parse_ffmpeg_report_reads_format_streams_tags_and_rotation() -> None:
    container = video.parse_ffmpeg_report(REPORT_720P)

    assert container.format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    assert container.duration == pytest.approx(9.43)
    assert container.bit_rate == 564_000
    assert container.tags == {"major_brand": "mp42", "comment": "first line\nsecond line", "synthetic": "true"}
    v, a, pic = container.streams
    assert (v.kind, v.codec, v.width, v.height) == ("video", "h264", 1280, 720)
    assert v.fps == Fraction(30000, 1001)
    assert v.rotation == -90.0
    assert v.start == pytest.approx(0.852019)
    assert (a.kind, a.codec, a.bit_rate) == ("audio", "aac", 164_000)
    assert pic.attached_pic and container.first("video") is v


def test_video_info_from_report_applies_rotation_and_start_offset() -> None:
    info = video._video_info(Path("scene.mp4"), video.parse_ffmpeg_report(REPORT_720P))

    assert (info.width, info.height, info.rotation) == (720, 1280, 270)
    assert info.start_offset == pytest.approx(0.852019)
    assert info.duration == pytest.approx(9.43 - 0.852019)
    assert info.frame_count == round(info.duration * 30000 / 1001) and not info.frame_count_exact
    assert info.has_audio and info.audio_codec == "aac" and info.audio_bit_rate == 164_000


def test_non_square_pixels_become_square_in_the_display_size() -> None:
    report = REPORT_720P.replace("1280x720 [SAR 1:1 DAR 16:9]", "720x576 [SAR 16:11 DAR 20:11]").replace(
        "Display Matrix: rotation of -90.00 degrees", ""
    )
    info = video._video_info(Path("dvd.mp4"), video.parse_ffmpeg_report(report))

    assert (info.width, info.height) == (1048, 576)
    assert info.sample_aspect == Fraction(16, 11)


def test_parse_ffprobe_json() -> None:
    data = {
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "2.002", "start_time": "0.000000",
                   "bit_rate": "800000", "tags": {"comment": "AI"}},
        "streams": [
            {"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080, "sample_aspect_ratio": "1:1",
             "avg_frame_rate": "30000/1001", "nb_frames": "60", "duration": "2.002", "start_time": "0.000000",
             "side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]},
            {"codec_type": "audio", "codec_name": "opus", "bit_rate": "96000", "duration": "2.01"},
        ],
    }

    info = video._video_info(Path("x.mp4"), video.parse_ffprobe_json(data))

    assert (info.width, info.height, info.rotation) == (1080, 1920, 90)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 60 and info.frame_count_exact
    assert info.audio_codec == "opus" and info.tags == {"comment": "AI"}


@pytest.mark.parametrize(
    ("printed", "exact"),
    [("29.97", Fraction(30000, 1001)), ("23.98", Fraction(24000, 1001)), ("59.94", Fraction(60000, 1001)),
     ("25", Fraction(25)), ("12.5", Fraction(25, 2)), (29.97, Fraction(30000, 1001))],
)
def test_snap_frame_rate(printed: str | float, exact: Fraction) -> None:
    assert video.snap_frame_rate(printed) == exact


def test_read_command() -> None:
    cmd = video.read_command("ffmpeg", Path("/clips/-odd:name.mp4"), start=1.5, max_frames=10, size=(320, 180))

    assert cmd[0] == "ffmpeg"
    assert cmd[cmd.index("-ss") + 1] == "1.500000"
    assert cmd.index("-ss") < cmd.index("-i")  # input seeking: fast, and still frame-accurate when decoding
    assert cmd[cmd.index("-i") + 1] == "file:/clips/-odd:name.mp4"  # never read as an option or a protocol
    assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"
    allowed = cmd[cmd.index("-format_whitelist") + 1].split(",")
    assert "mov" in allowed and "matroska" in allowed and "hls" not in allowed and "concat" not in allowed
    assert cmd[cmd.index("-vf") + 1] == "scale=320:180:flags=bicubic"
    assert cmd[cmd.index("-frames:v") + 1] == "10"
    assert cmd[-7:] == ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    assert "-autorotate" not in cmd  # ffmpeg rotates by default
    plain = video.read_command("ffmpeg", Path("/a.mp4"))
    assert "-ss" not in plain and "-vf" not in plain and "-frames:v" not in plain
    assert "fps=30000/1001" in video.read_command("ffmpeg", Path("/a.mp4"), fps=Fraction(30000, 1001))


@pytest.mark.parametrize(
    ("release", "option"),
    [((4, 4), "-vsync"), ((5, 0), "-vsync"), ((5, 1), "-fps_mode"), ((6, 1), "-fps_mode"), ((7, 1), "-fps_mode"),
     ((9, 0), "-fps_mode"), (SNAPSHOT, "-fps_mode")],
)
def test_frames_pass_through_with_the_option_each_ffmpeg_knows(release: tuple[int, int], option: str) -> None:
    # -fps_mode arrived in 5.1; Ubuntu 22.04's 4.4 (and the CUDA images built on it) only know -vsync.
    other = "-vsync" if option == "-fps_mode" else "-fps_mode"
    read = video.read_command("ffmpeg", Path("/a.mp4"), size=(64, 64), release=release)
    encode = video.encode_command("ffmpeg", Path("/o.part"), 64, 64, Fraction(25), release=release)
    fit = video.fit_command("ffmpeg", Path("/in.mp4"), Path("/o.part"), FitPlan(64, 64, 1, None, False), release=release)
    for cmd in (read, encode, fit):
        assert cmd[cmd.index(option) + 1] == "passthrough" and other not in cmd
        assert cmd.index(option) > cmd.index("-i")  # an output option
    assert video.passthrough_args(release) == [option, "passthrough"]


def test_encode_command_constant_quality_with_tags() -> None:
    cmd = video.encode_command("ffmpeg", Path("/o/x.part"), 1280, 720, Fraction(30000, 1001), metadata=AI_TAGS)

    assert cmd[cmd.index("-framerate") + 1] == "30000/1001"
    assert cmd[cmd.index("-s") + 1] == "1280x720"
    assert cmd[cmd.index("-c:v") + 1] == "libx264" and cmd[cmd.index("-crf") + 1] == "20"
    assert "pad=" not in cmd[cmd.index("-vf") + 1]
    assert "format=yuv420p" in cmd[cmd.index("-vf") + 1]
    assert "comment=" + AI_TAGS["comment"] in cmd
    assert cmd[cmd.index("-movflags") + 1] == "+faststart+use_metadata_tags"  # custom keys need mdta atoms
    assert cmd[-4:] == ["-f", "mp4", "-y", "/o/x.part"]


def test_encode_command_odd_size_bitrate_and_intermediate() -> None:
    cmd = video.encode_command("ffmpeg", Path("x"), 201, 151, Fraction(25), bitrate=1_000_000, final=False,
                               metadata={"comment": "x"})

    assert cmd[cmd.index("-vf") + 1].startswith("pad=ceil(iw/2)*2:ceil(ih/2)*2,")
    assert cmd[cmd.index("-b:v") + 1] == "1000000" and "-maxrate" in cmd and "-crf" not in cmd
    assert "-movflags" not in cmd and "-metadata" not in cmd  # the mux step writes those
    standard = video.encode_command("ffmpeg", Path("x"), 2, 2, Fraction(25), metadata={"comment": "x"})
    assert standard[standard.index("-movflags") + 1] == "+faststart"


def test_metadata_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="metadata key"):
        video.metadata_args({"bad key=": "x"})


def test_mux_audio_command_cuts_audio_to_the_video() -> None:
    copy = video.mux_audio_command("ffmpeg", Path("/v.mp4"), Path("/src.mp4"), Path("/o.part"), duration=2.0,
                                   audio_offset=1.25)
    assert copy[copy.index("-ss") + 1] == "1.250000"
    assert copy.index("file:/v.mp4") < copy.index("-ss") < copy.index("file:/src.mp4")  # on the audio input only
    assert copy[copy.index("-c:a") + 1] == "copy" and copy[copy.index("-c:v") + 1] == "copy"
    assert copy[copy.index("-t") + 1] == "2.000000"
    recode = video.mux_audio_command("ffmpeg", Path("/v"), Path("/a"), Path("/o"), duration=1, copy_audio=False)
    assert recode[recode.index("-c:a") + 1] == "aac" and "-ss" not in recode


def _info(width: int = 1280, height: int = 720, fps: int = 30, duration: float = 10.0) -> VideoInfo:
    return VideoInfo(Path("clip.mp4"), width, height, Fraction(fps), int(duration * fps), duration, 0, True, "h264",
                     "aac", None)


def test_plan_fit_keeps_size_when_the_budget_is_generous() -> None:
    plan = video.plan_fit(_info(), 25 * 1024 * 1024, audio_codec="aac", audio_bit_rate=160_000)

    assert (plan.width, plan.height) == (1280, 720)
    assert plan.audio_bitrate == 128_000 and not plan.copy_audio
    total_bytes = (plan.video_bitrate + plan.audio_bitrate) * 10 / 8
    assert 0.85 * 25 * 1024 * 1024 < total_bytes < 0.96 * 25 * 1024 * 1024


def test_plan_fit_downscales_and_lowers_audio_on_a_tight_budget() -> None:
    plan = video.plan_fit(_info(), 1_000_000, audio_codec="aac", audio_bit_rate=160_000)

    assert plan.height < 720 and plan.width % 2 == 0 and plan.height % 2 == 0
    assert plan.width / plan.height == pytest.approx(16 / 9, rel=0.02)
    assert plan.audio_bitrate is not None and plan.audio_bitrate < 128_000
    assert (plan.video_bitrate + plan.audio_bitrate) * 10 / 8 < 1_000_000


def test_plan_fit_copies_low_bitrate_aac_and_handles_portrait_and_silence() -> None:
    plan = video.plan_fit(_info(720, 1280), 5_000_000, audio_codec="aac", audio_bit_rate=48_000)
    assert plan.copy_audio and plan.audio_bitrate is not None and plan.audio_bitrate >= 48_000
    assert video.plan_fit(_info(), 5_000_000).audio_bitrate is not None  # the clip's own audio by default
    silent = video.plan_fit(_info(720, 1280), 600_000, audio_codec=None)
    assert silent.audio_bitrate is None and silent.width < silent.height and silent.width < 720
    assert video.plan_fit(_info(), 2_000_000, audio_codec=None, scale=0.5).video_bitrate < (
        video.plan_fit(_info(), 2_000_000, audio_codec=None).video_bitrate
    )


def test_plan_fit_refuses_the_impossible() -> None:
    with pytest.raises(EncodeError, match="cannot fit") as caught:
        video.plan_fit(_info(duration=600), 1_000_000, audio_codec="aac")
    assert caught.value.hint and "shorter" in caught.value.hint


def test_fit_command() -> None:
    plan = FitPlan(640, 360, 500_000, 64_000, False)
    cmd = video.fit_command("ffmpeg", Path("/in.mp4"), Path("/out.part"), plan, metadata={"comment": "AI"})

    assert cmd[cmd.index("-vf") + 1].startswith("scale=640:360")
    assert cmd[cmd.index("-b:v") + 1] == cmd[cmd.index("-maxrate") + 1] == "500000"
    assert cmd[cmd.index("-c:a") + 1] == "aac" and cmd[cmd.index("-b:a") + 1] == "64000"
    assert ["-map", "0:a:0"] == cmd[cmd.index("0:a:0") - 1 : cmd.index("0:a:0") + 1]
    silent = video.fit_command("ffmpeg", Path("/in"), Path("/o"), FitPlan(2, 2, 1, None, False))
    assert "-an" in silent and "0:a:0" not in silent


def test_animation_command() -> None:
    gif = video.animation_command("ffmpeg", Path("/a.gif"), 644, 320, 10, out_height=240, kind="gif")
    graph = gif[gif.index("-filter_complex") + 1]
    assert "palettegen" in graph and "paletteuse" in graph and "scale=-2:240" in graph
    assert gif[gif.index("-loop") + 1] == "0"
    webp = video.animation_command("ffmpeg", Path("/a.webp"), 644, 320, 10, out_height=240, kind="webp")
    assert webp[webp.index("-c:v") + 1] == "libwebp_anim"


# --------------------------------------------------------------------------------------------------------------
# Real ffmpeg (the bundled binary, as on CI), real clips
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["system", "bundled"])
def tools(request: pytest.FixtureRequest) -> FFmpegTools:
    """Each ffmpeg famswap may run: the system's (when one is on the PATH) and the bundled one."""
    if request.param == "bundled":
        return bundled_ffmpeg()
    system = system_ffmpeg()
    if system is None:
        pytest.skip("no system ffmpeg on the PATH (CI installs Debian's)")
    problem = unusable_because(system)
    if problem is not None:
        pytest.skip(f"{problem}: famswap uses the bundled one instead")
    return system


def _rotate_args(ffmpeg: str, degrees: int) -> list[str]:
    """Input options that store ``degrees`` (counter-clockwise) in the copied stream's display matrix.

    Newer ffmpeg builds (the bundled one) have ``-display_rotation``; older ones (5.1) do not, and their MP4 muxer
    turns a ``rotate`` stream tag into the same matrix instead (newer muxers ignore that tag).
    """
    help_text = subprocess.run([ffmpeg, "-hide_banner", "-h", "long"], capture_output=True, text=True, timeout=30)
    if "-display_rotation" in help_text.stdout:
        return ["-display_rotation", str(degrees)]
    return ["-metadata:s:v:0", f"rotate={degrees}"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, clips: Path, tools: FFmpegTools) -> dict[str, Path]:
    """Derived test files, made by stream copy (no re-encoding, fast)."""
    out = tmp_path_factory.mktemp("made")
    scene = clips / SCENE

    def ffmpeg(*args: str) -> None:
        subprocess.run([tools.ffmpeg, "-v", "error", "-y", *args], check=True, timeout=60)

    files = {
        "audio_only": out / "voice.m4a",
        "rotated": out / "rotated.mp4",
        "scene_3s": out / "scene_3s.mp4",
    }
    ffmpeg("-i", str(scene), "-vn", "-c:a", "copy", "-t", "1", str(files["audio_only"]))
    files["wav"] = out / "voice.wav"
    ffmpeg("-i", str(scene), "-vn", "-c:a", "pcm_s16le", "-t", "1", str(files["wav"]))
    rotate = _rotate_args(tools.ffmpeg, 90)
    if rotate[0] == "-display_rotation":
        ffmpeg(*rotate, "-i", str(scene), "-t", "0.5", "-c", "copy", str(files["rotated"]))
    else:
        ffmpeg("-i", str(scene), "-t", "0.5", "-c", "copy", *rotate, str(files["rotated"]))
    ffmpeg("-i", str(scene), "-t", "3", "-c", "copy", str(files["scene_3s"]))
    files["anamorphic"] = out / "anamorphic.mp4"  # 512x512 stored, pixels 4:3 wide
    ffmpeg("-i", str(clips / TINY), "-t", "0.2", "-c", "copy", "-bsf:v", "h264_metadata=sample_aspect_ratio=4/3",
           str(files["anamorphic"]))
    # Fast-start MP4 (index first) cut in the middle of its media data: ffmpeg alone still probes it fine.
    files["truncated_faststart"] = out / "cut_faststart.mp4"
    files["truncated_faststart"].write_bytes(scene.read_bytes()[:300_000])
    # Index-at-end MP4 cut in half: the index is gone.
    files["truncated_no_index"] = out / "cut_no_index.mp4"
    files["truncated_no_index"].write_bytes((clips / TINY).read_bytes()[:1_000_000])
    files["text"] = out / "notes.mp4"
    files["text"].write_text("this is not a video\n" * 50)
    files["empty"] = out / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["hls"] = out / "playlist.mp4"
    files["hls_m3u8"] = out / "playlist.m3u8"
    files["hls_m3u8"].write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nsegment.ts\n#EXT-X-ENDLIST\n")
    files["hls"].write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n")
    return files


def _children() -> list[tuple[int, str]]:
    """(pid, state) of this process's live children, from /proc."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found.append((int(entry), fields[0]))
    return found


def _no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_probe_720p_scene(clips: Path, tools: FFmpegTools) -> None:
    info = probe(clips / SCENE, tools=tools)

    assert (info.width, info.height) == (1280, 720)
    assert info.fps == 30
    assert info.duration == pytest.approx(9.4, abs=0.1)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.video_codec == "h264" and info.rotation == 0
    assert abs(info.frame_count - 282) <= 2
    exact = probe(clips / SCENE, count_frames=True, tools=tools)
    assert exact.frame_count == 282 and exact.frame_count_exact  # what read_frames yields, see below


def test_probe_tiny_clip_without_audio(clips: Path, tools: FFmpegTools) -> None:
    info = probe(clips / TINY, count_frames=True, tools=tools)

    assert (info.width, info.height, info.fps) == (512, 512, 25)
    assert not info.has_audio and info.audio_codec is None
    assert info.frame_count == 78
    assert info.duration == pytest.approx(3.1, abs=0.1)


def test_probe_limits(clips: Path, tools: FFmpegTools) -> None:
    with pytest.raises(MediaTooLarge, match=SCENE):
        probe(clips / SCENE, max_seconds=5, tools=tools)
    with pytest.raises(MediaTooLarge, match="pixels"):
        probe(clips / SCENE, max_pixels=640 * 480, tools=tools)
    assert probe(clips / SCENE, max_seconds=10, max_pixels=1280 * 720, tools=tools).width == 1280


@pytest.mark.parametrize(
    ("name", "words"),
    [("missing", "does not exist"), ("empty", "empty"), ("text", "not a video"), ("truncated_faststart", "truncated"),
     ("truncated_no_index", "not a video"), ("image", "still image"), ("audio_only", "no video"),
     ("hls", "not a video"), ("hls_m3u8", "not a video")],
)
def test_bad_inputs_are_refused_fast_and_named(
    name: str, words: str, made: dict[str, Path], photos: Path, tools: FFmpegTools
) -> None:
    path = {"missing": made["text"].with_name("gone.mp4"), "image": photos / "obama.jpg"}.get(name) or made[name]
    started = time.perf_counter()

    with pytest.raises(UnsupportedMedia, match=words) as caught:
        probe(path, tools=tools)
    with pytest.raises(UnsupportedMedia):
        read_frames(path, tools=tools)  # refused at the call, before any frame is asked for

    assert path.name in caught.value.message
    assert "/" not in caught.value.message.replace(path.name, "")  # no server paths in what users see
    assert time.perf_counter() - started < 3


def test_read_frames_streams_rgb_frames(clips: Path, tools: FFmpegTools) -> None:
    frames = list(read_frames(clips / TINY, max_frames=5, tools=tools))

    assert len(frames) == 5
    assert all(f.shape == (512, 512, 3) and f.dtype == np.uint8 for f in frames)
    frames[0][0, 0] = 1  # writable: consumers paste faces in place
    small = list(read_frames(clips / TINY, max_frames=2, size=(128, 96), tools=tools))
    assert small[0].shape == (96, 128, 3)
    assert abs(float(small[0].mean()) - float(frames[0].mean())) < 5


def test_read_frames_start_is_seconds_and_frame_accurate(clips: Path, tools: FFmpegTools) -> None:
    size = (128, 128)
    head = list(read_frames(clips / TINY, max_frames=27, size=size, tools=tools))
    later = next(iter(read_frames(clips / TINY, start=1.0, max_frames=1, size=size, tools=tools)))

    diffs = [np.abs(later.astype(int) - head[i].astype(int)).mean() for i in (24, 25, 26)]
    assert diffs[1] < 0.5 < min(diffs[0], diffs[2])  # frame 25 at 25 fps, exactly


def test_read_frames_count_matches_probe(clips: Path, tools: FFmpegTools) -> None:
    count = sum(1 for _ in read_frames(clips / TINY, size=(64, 64), tools=tools))

    assert count == probe(clips / TINY, count_frames=True, tools=tools).frame_count


def test_read_frames_honours_rotation(made: dict[str, Path], tools: FFmpegTools) -> None:
    info = probe(made["rotated"], tools=tools)

    assert (info.width, info.height, info.rotation) == (720, 1280, 90)
    frame = next(iter(read_frames(made["rotated"], max_frames=1, tools=tools)))
    assert frame.shape == (1280, 720, 3)


def test_read_frames_makes_pixels_square(made: dict[str, Path], tools: FFmpegTools) -> None:
    info = probe(made["anamorphic"], tools=tools)

    assert (info.width, info.height, info.sample_aspect) == (682, 512, Fraction(4, 3))
    assert next(iter(read_frames(made["anamorphic"], max_frames=1, tools=tools))).shape == (512, 682, 3)


def test_stopping_early_leaves_no_ffmpeg_behind(clips: Path, tools: FFmpegTools) -> None:
    before = _children()
    frames = read_frames(clips / SCENE, tools=tools)
    assert _children() == before  # nothing starts until the first frame is asked for
    next(frames)
    assert len(_children()) == len(before) + 1
    frames.close()
    assert _children() == before

    for index, _ in enumerate(read_frames(clips / SCENE, tools=tools)):
        if index == 2:
            break
    assert _children() == before  # the dropped generator killed and reaped its ffmpeg


def test_writer_round_trip_keeps_frames_fps_audio_and_tags(clips: Path, tmp_path: Path, tools: FFmpegTools) -> None:
    source = clips / SCENE
    info = probe(source, tools=tools)
    frames = list(read_frames(source, max_frames=60, tools=tools))  # the first 2 s
    out = tmp_path / "swapped.mp4"

    with VideoWriter(out, info.width, info.height, info.fps, audio_from=source, metadata=AI_TAGS, tools=tools) as w:
        for frame in frames:
            w.write(frame)
    assert w.frames_written == 60

    result = probe(out, count_frames=True, tools=tools)
    assert result.frame_count == 60 and result.fps == 30
    assert (result.width, result.height) == (1280, 720)
    assert result.has_audio and result.audio_codec == "aac"
    assert result.duration == pytest.approx(2.0, abs=0.05)  # container length: audio cut to the video
    assert {k: result.tags.get(k) for k in AI_TAGS} == AI_TAGS
    again = list(read_frames(out, max_frames=3, tools=tools))
    assert np.abs(again[2].astype(int) - frames[2].astype(int)).mean() < 3  # colours survive (BT.709 both ways)
    assert _no_leftovers(tmp_path)
    assert out.read_bytes()[4:8] == b"ftyp" and out.read_bytes().find(b"moov") < out.read_bytes().find(b"mdat")


def test_writer_ntsc_rate_odd_size_and_no_audio_source(clips: Path, tmp_path: Path, tools: FFmpegTools) -> None:
    out = tmp_path / "odd.mp4"
    frames = list(read_frames(clips / TINY, max_frames=12, size=(101, 75), tools=tools))

    with VideoWriter(out, 101, 75, Fraction(30000, 1001), audio_from=clips / TINY, tools=tools) as writer:
        for frame in frames:
            writer.write(frame)

    info = probe(out, count_frames=True, tools=tools)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 12
    assert (info.width, info.height) == (102, 76)  # padded to even for yuv420p
    assert not info.has_audio


def test_writer_reencodes_non_aac_audio_and_never_cuts_the_video(
    made: dict[str, Path], tmp_path: Path, tools: FFmpegTools
) -> None:
    out = tmp_path / "voiced.mp4"
    with VideoWriter(out, 64, 48, 10, audio_from=made["wav"], tools=tools) as writer:
        for i in range(20):  # 2 s of picture, 1 s of sound
            writer.write(np.full((48, 64, 3), i * 10, np.uint8))

    info = probe(out, count_frames=True, tools=tools)
    assert info.audio_codec == "aac"
    assert info.frame_count == 20 and info.duration == pytest.approx(2.0, abs=0.05)


def test_writer_failures_raise_encode_error_and_leave_nothing(tmp_path: Path, tools: FFmpegTools) -> None:
    out = tmp_path / "never.mp4"
    with pytest.raises(EncodeError, match="no frames"):
        with VideoWriter(out, 64, 64, 25, tools=tools):
            pass
    with pytest.raises(ValueError, match="frame must be"):
        with VideoWriter(out, 64, 64, 25, tools=tools) as writer:
            writer.write(np.zeros((64, 65, 3), np.uint8))
    with pytest.raises(EncodeError) as caught:
        with VideoWriter(out, 64, 64, 25, preset="no-such-preset", tools=tools) as writer:
            for _ in range(50):
                writer.write(np.zeros((64, 64, 3), np.uint8))
    assert "preset" in caught.value.message.lower()  # ffmpeg's own words are kept
    dropped = VideoWriter(out, 64, 64, 25, tools=tools)
    dropped.write(np.zeros((64, 64, 3), np.uint8))
    del dropped  # never closed: the finalizer stops ffmpeg and removes the partial file
    assert not out.exists() and _no_leftovers(tmp_path)
    assert _children() == []


def test_fit_copies_a_file_that_already_fits(clips: Path, tmp_path: Path, tools: FFmpegTools) -> None:
    result = fit_to_size(clips / SCENE, tmp_path / "same.mp4", 2 * 1024 * 1024, tools=tools)

    assert result.copied and result.attempts == 0
    assert (tmp_path / "same.mp4").read_bytes() == (clips / SCENE).read_bytes()


def test_fit_tiny_clip_under_2_mib(clips: Path, tmp_path: Path, tools: FFmpegTools) -> None:
    limit = 2 * 1024 * 1024
    assert (clips / TINY).stat().st_size > limit

    result = fit_to_size(clips / TINY, tmp_path / "fit.mp4", limit, metadata=AI_TAGS, tools=tools)

    assert not result.copied and result.attempts <= 2
    assert result.size_bytes == (tmp_path / "fit.mp4").stat().st_size <= limit
    assert result.size_bytes > 0.6 * limit  # the budget is used, not wasted
    info = probe(tmp_path / "fit.mp4", count_frames=True, tools=tools)
    assert (info.width, info.height, info.frame_count) == (512, 512, 78)
    assert {k: info.tags.get(k) for k in AI_TAGS} == AI_TAGS


def test_fit_tight_limit_downscales_and_keeps_audio(made: dict[str, Path], tmp_path: Path, tools: FFmpegTools) -> None:
    limit = 120_000  # 3 s of 720p with sound
    result = fit_to_size(made["scene_3s"], tmp_path / "small.mp4", limit, tools=tools)

    assert result.size_bytes <= limit and result.attempts <= 2
    info = probe(tmp_path / "small.mp4", tools=tools)
    assert info.height < 720 and info.width / info.height == pytest.approx(16 / 9, rel=0.02)
    assert info.has_audio
    assert info.duration == pytest.approx(3.0, abs=0.1)
    assert _no_leftovers(tmp_path)


def test_fit_refuses_an_impossible_budget_without_encoding(clips: Path, tmp_path: Path, tools: FFmpegTools) -> None:
    started = time.perf_counter()
    with pytest.raises(EncodeError, match="cannot fit"):
        fit_to_size(clips / SCENE, tmp_path / "no.mp4", 20_000, tools=tools)
    assert time.perf_counter() - started < 2
    assert not (tmp_path / "no.mp4").exists()


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_comparison_animation_is_small_and_side_by_side(
    suffix: str, clips: Path, tmp_path: Path, tools: FFmpegTools
) -> None:
    before = list(read_frames(clips / TINY, max_frames=40, size=(256, 256), tools=tools))
    after = [255 - frame for frame in before]
    out = tmp_path / f"compare{suffix}"

    assert comparison_animation(before, after, out, height=200, max_frames=20, tools=tools) == out

    assert 0 < out.stat().st_size <= 512_000
    if suffix == ".webp" and tools.release < (7, 1):
        # ffmpeg decodes animated WebP only from 7.1: older ones refuse it, and Pillow checks what was written.
        with pytest.raises(UnsupportedMedia):
            list(read_frames(out, tools=tools))
        from PIL import Image

        with Image.open(out) as image:
            assert image.format == "WEBP" and image.n_frames == 20
            assert image.height == 200 and image.width == pytest.approx(2 * 200 + 3, abs=3)
            assert image.info["loop"] == 0
            image.seek(1)
            image.load()
            assert image.info["duration"] == 100  # ms: 10 frames/s
    else:
        info = probe(out, count_frames=True, tools=tools)
        assert info.height == 200 and info.width == pytest.approx(2 * 200 + 3, abs=3)
        assert info.frame_count == 20 and info.fps == 10
    with pytest.raises(ValueError, match="gif or .webp"):
        comparison_animation(before, after, tmp_path / "x.mp4", tools=tools)


def test_comparison_animation_shrinks_to_its_byte_budget(clips: Path, tmp_path: Path, tools: FFmpegTools) -> None:
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (128, 96, 3), dtype=np.uint8) for _ in range(10)]  # incompressible
    out = comparison_animation(noise, noise[::-1], tmp_path / "noise.gif", height=128, max_bytes=60_000, tools=tools)
    assert out.stat().st_size <= 60_000
    assert probe(out, tools=tools).height < 128  # redone smaller


def test_prefetch_keeps_order_and_reraises_errors_in_the_caller() -> None:
    assert list(video.prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():  # noqa: ANN202
        yield 1
        yield 2
        raise UnsupportedMedia("clip.mp4 could not be decoded to the end.")

    got = []
    with pytest.raises(UnsupportedMedia, match="decoded to the end"):
        for item in video.prefetch(broken(), depth=1):
            got.append(item)
    assert got == [1, 2]


def test_closing_prefetch_stops_the_reader_and_closes_its_source() -> None:
    closed = []

    def endless():  # noqa: ANN202
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    frames = video.prefetch(endless(), depth=2)
    assert [next(frames) for _ in range(3)] == [0, 1, 2]
    frames.close()
    assert closed == [True]


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "F_SETPIPE_SZ"), reason="Linux only")
def test_frame_pipes_are_grown_to_hold_a_frame(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        assert video.grow_pipe(read_end, 300_000) >= 300_000
        assert video.grow_pipe(read_end, 1000) >= 1 << 16  # never shrunk below the default
    finally:
        os.close(read_end)
        os.close(write_end)
    with (tmp_path / "file").open("wb") as f:
        assert video.grow_pipe(f.fileno(), 300_000) == 0  # not a pipe
