"""The published v1 API is a baseline that `buf breaking` holds the protos to.

protos/baseline/v1.binpb is a buf image of protos/ as v1 was first published (`make
proto-baseline` builds it from git); `make lint` runs `buf breaking` against it with the rules of
buf.yaml. buf comes from node_modules/ (`make test` installs it), as in tests/test_protos_lint.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"
BASELINE = ROOT / "protos" / "baseline" / "v1.binpb"


def buf() -> str:
    found = str(BUF) if BUF.exists() else shutil.which("buf")
    assert found is not None, "buf is not installed: `make test` (or `make lint`) installs it"
    return found


def breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [buf(), "breaking", "--against", str(BASELINE)],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fields(image: descriptor_pb2.FileDescriptorSet, message: str) -> dict[str, int]:
    package, _, name = message.rpartition(".")
    for file in image.file:
        if file.package == package:
            for m in file.message_type:
                if m.name == name:
                    return {f.name: f.number for f in m.field}
    raise AssertionError(f"{message} is not in the baseline")


def test_the_baseline_is_v1_as_first_published() -> None:
    """A buf image reads as a FileDescriptorSet; it holds the fields the first v1 had."""
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    assert {f.name for f in image.file if f.name.startswith("idmesh/")} == {
        "idmesh/events/v1/events.proto",
        "idmesh/gateway/v1/gateway.proto",
        "idmesh/notifier/v1/notifier.proto",
        "idmesh/registry/v1/registry.proto",
    }
    assert fields(image, "idmesh.notifier.v1.SubscribeResponse") == {"notice": 1, "progress": 2}
    assert fields(image, "idmesh.registry.v1.VerifySubscriberRequest") == {
        "request_id": 1,
        "phone_number": 2,
    }
    assert fields(image, "idmesh.gateway.v1.ImportPortedNumbersRequest") == {
        "all_or_nothing": 1,
        "rows": 2,
    }


def test_the_protos_keep_every_promise_of_the_published_v1() -> None:
    result = breaking(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reserving_subscribe_notice_again_is_a_breaking_change(tmp_path: Path) -> None:
    """The change that once made first-v1 consumers miss every termination fails the check."""
    shutil.copytree(ROOT / "protos" / "idmesh", tmp_path / "protos" / "idmesh")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "idmesh" / "notifier" / "v1" / "notifier.proto"
    text = proto.read_text()
    start = text.index("  oneof kind {")
    end = text.index("  }\n", start) + len("  }\n")
    proto.write_text(
        text[:start]
        + '  reserved 1;\n  reserved "notice";\n  ProgressMark progress = 2;\n'
        + text[end:]
    )
    result = breaking(tmp_path)
    assert result.returncode != 0
    assert 'Previously present field "1" with name "notice" on message "SubscribeResponse"' in (
        result.stdout
    )


def test_make_lint_checks_against_the_baseline() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "breaking --against 'protos/baseline/v1.binpb'" in dry_run.stdout
