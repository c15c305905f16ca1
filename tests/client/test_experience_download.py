"""`python -m ddpg_client experience` without a server: the download streamed with its progress, the Minari archive
unpacked into a datasets directory, Parquet saved as a file, and an archive that would write outside the directory
refused with nothing left behind (httpx.MockTransport plays the service)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ddpg_client import PolicyClient
from ddpg_client.errors import NotFoundError
from ddpg_client.experience_download import download


def _archive(members: dict[str, bytes]) -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sink.getvalue()


def _client(answer: Callable[[httpx.Request], httpx.Response]) -> PolicyClient:
    return PolicyClient("http://svc", transport=httpx.MockTransport(answer))


def test_a_minari_archive_is_unpacked_into_a_datasets_directory(tmp_path: Path) -> None:
    body = _archive({"ddpg-service/arm/recorded-v0/data/metadata.json": b"{}"})
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/gzip"})

    with _client(answer) as client:
        path = download(client, "arm", "minari", tmp_path, progress=False)
    assert seen[0].url.path == "/models/arm/experience/dataset" and seen[0].url.params["format"] == "minari"
    assert path == tmp_path / "ddpg-service/arm/recorded-v0"
    assert (path / "data/metadata.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddpg-service"], "the partial download is gone"


def test_parquet_is_saved_as_model_parquet_with_progress_reported(tmp_path: Path) -> None:
    body = b"PAR1" + bytes(200_000) + b"PAR1"
    with _client(lambda _: httpx.Response(200, content=body)) as client:
        progress: list[tuple[int, int | None]] = []
        sink = io.BytesIO()
        assert client.download_experience(
            "arm", sink, format="parquet", on_progress=lambda *a: progress.append(a)
        ) == len(body)
        assert progress[-1] == (len(body), len(body)) and sink.getvalue() == body
        path = download(client, "arm", "parquet", tmp_path, progress=True)
    assert path == tmp_path / "arm.parquet" and path.read_bytes() == body


@pytest.mark.parametrize("name", ["../escaped.json", "/etc/escaped.json", "ddpg-service/../../escaped.json"])
def test_an_archive_writing_outside_the_directory_is_refused(tmp_path: Path, name: str) -> None:
    body = _archive({name: b"x"})
    out = tmp_path / "out"
    with _client(lambda _: httpx.Response(200, content=body)) as client, pytest.raises(ValueError, match="unsafe"):
        download(client, "arm", "minari", out, progress=False)
    assert list(out.iterdir()) == [] and not (tmp_path / "escaped.json").exists()


def test_an_error_answer_raises_the_typed_error_and_leaves_nothing(tmp_path: Path) -> None:
    message = "model 'arm' has no recorded experience"
    error = {
        "error": {
            "code": "no_experience",
            "message": f"name: {message}",
            "details": [{"field": "name", "message": message}],
        }
    }
    with _client(lambda _: httpx.Response(404, json=error)) as client, pytest.raises(NotFoundError) as raised:
        download(client, "arm", "minari", tmp_path, progress=False)
    assert raised.value.code == "no_experience" and raised.value.details[0]["field"] == "name"
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_is_refused_before_any_request(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with _client(answer) as client, pytest.raises(ValueError, match="format must be one of minari, parquet"):
        download(client, "arm", "hdf5", tmp_path)
