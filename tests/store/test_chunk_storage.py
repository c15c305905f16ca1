"""Chunk bytes outside the database: a directory and a real S3-compatible server (moto_server as a process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.chunk_storage import ChunkMissingError, ChunkStorage, FsspecChunkStorage, check_key, open_chunk_storage
from tests.s3_server import S3Server, running_s3_server


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ChunkStorage:
    if request.param == "file":
        return FsspecChunkStorage(f"file://{tmp_path}/experience")
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"chunks-{abs(hash(str(tmp_path))) % 10**8}"
    server.create_bucket(bucket)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a fresh client that reads the endpoint set above
    return FsspecChunkStorage(f"s3://{bucket}/experience/prefix")


def test_put_get_delete_round_trip(storage: ChunkStorage) -> None:
    payload = bytes(range(256)) * 1000
    storage.put("7/flush-a", payload)
    storage.put("7/flush-b", b"")
    storage.put("8/flush-c", b"third")
    assert storage.get("7/flush-a") == payload
    assert storage.get("7/flush-b") == b""
    storage.delete(["7/flush-a", "7/flush-b"])
    with pytest.raises(ChunkMissingError, match="7/flush-a"):
        storage.get("7/flush-a")
    assert storage.get("8/flush-c") == b"third"


def test_deleting_keys_already_gone_is_fine(storage: ChunkStorage) -> None:
    storage.put("1/kept", b"x")
    storage.put("1/gone", b"y")
    storage.delete(["1/gone"])
    storage.delete(["1/gone", "1/never-was", "1/kept"])
    for key in ("1/gone", "1/kept"):
        with pytest.raises(ChunkMissingError):
            storage.get(key)


def test_s3_objects_land_under_the_prefix_on_the_server(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    s3_server.create_bucket("visible")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    FsspecChunkStorage("s3://visible/exp/").put("3/f1", b"bytes on the server")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    body = client.get_object(Bucket="visible", Key="exp/3/f1")["Body"].read()
    assert body == b"bytes on the server"


def test_a_directory_put_leaves_no_partial_files(tmp_path: Path) -> None:
    storage = FsspecChunkStorage(f"file://{tmp_path}")
    storage.put("5/abc", b"data")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == ["5/abc"]


@pytest.mark.parametrize("key", ["../escape", "/absolute", "a//b", "a/./b", "a/../b", "", "sp ace", "a/"])
def test_keys_that_could_leave_the_prefix_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk storage key"):
        check_key(key)
    with pytest.raises(ValueError):
        FsspecChunkStorage(f"file://{tmp_path}").put(key, b"x")


def test_no_url_means_chunks_stay_in_the_database() -> None:
    assert open_chunk_storage(None) is None
    assert open_chunk_storage("") is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [("/var/lib/experience", "must be an fsspec URL"), ("nosuchfs://bucket/x", "fsspec knows no storage 'nosuchfs'")],
)
def test_a_bad_experience_url_stops_start_up_with_the_reason(url: str, problem: str) -> None:
    from pydantic import ValidationError

    from store.settings import StoreSettings

    with pytest.raises(ValidationError, match=problem):
        StoreSettings(experience_url=url)
    assert StoreSettings(experience_url="").experience_url is None
    assert StoreSettings(experience_url="s3://bucket/prefix").experience_url == "s3://bucket/prefix"
