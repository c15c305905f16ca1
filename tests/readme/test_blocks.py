"""Which blocks of the README `make test-readme` runs, in what order, which it skips, and how it checks answers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.readme.blocks import Block, extract, extract_file, shape, unexpected_records
from tests.readme.run_readme import DOCUMENTS, preflight, rewrite_port, run_block

REPO = Path(__file__).resolve().parents[2]

SAMPLE = """# Title

```
make run    # untagged: a listing, not run
```

```bash
curl -s localhost:8000/act -d '{"observation": [1.0]}'
# {"action":[-1.09],"policy_id":1}
# /act serves it within a second (prose, not an answer)
curl -s localhost:8000/jobs/1 | jq -c .progress
# {"episodes_done":30,
#  "last_return":-127.04}
```

```python
print("hello")  # hello
```

```bash
# slow: about a minute
sleep 1
```

```bash
# needs a Docker engine; not part of make run
docker compose up -d
```

```json
{"not": "run"}
```
"""


def test_sample_blocks_in_order_with_the_docker_one_skipped() -> None:
    blocks = extract(SAMPLE, "sample.md")
    assert [(block.line, block.lang, block.slow, bool(block.skip)) for block in blocks] == [
        (7, "bash", False, False),
        (16, "python", False, False),
        (20, "bash", True, False),
        (25, "bash", False, True),
    ]
    assert blocks[3].skip == "needs a Docker engine; not part of make run"
    assert blocks[0].code.startswith("curl -s localhost:8000/act") and blocks[0].code.endswith("-127.04}\n")


def test_answers_are_whole_line_comments_with_continuations_joined() -> None:
    first = extract(SAMPLE, "sample.md")[0]
    assert first.answers == ('{"action":[-1.09],"policy_id":1}', '{"episodes_done":30,"last_return":-127.04}')
    assert extract(SAMPLE, "sample.md")[1].answers == ()  # python blocks show answers inline; not compared


def test_answers_compare_by_shape_so_ids_and_figures_may_change() -> None:
    block = extract(SAMPLE, "sample.md")[0]
    assert shape('{"env_id":"Pendulum-v1","x":[-1.5e-05, 3],"y":null}') == '{"env_id":"Pendulum-v1","x":[N, N],"y":N}'
    # curl prints JSON without a newline: two answers on one line are two records.
    assert unexpected_records(block, '{"action":[0.5],"policy_id":7}{"episodes_done":3,"last_return":-1}\n') == []
    error = '{"error":{"code":"validation_error","message":"policy_id: no policy 7"}}'
    assert unexpected_records(block, error) == [error]
    assert unexpected_records(block, "null\n") == ["null"]  # `jq .id` of an error body


def test_a_block_that_shows_no_answer_is_checked_by_exit_status_only() -> None:
    block = Block("x.md", 1, "bash", "curl -s localhost:8000/models/car\n")
    assert unexpected_records(block, '{"anything": 1}') == []


def test_the_port_is_rewritten_in_both_spellings_of_the_address() -> None:
    code = 'curl localhost:8000/act\nPolicyClient("http://127.0.0.1:8000")\n'
    assert rewrite_port(code, 8123) == 'curl localhost:8123/act\nPolicyClient("http://127.0.0.1:8123")\n'
    assert rewrite_port(code, 8000) == code


def test_the_readme_tour_runs_every_bash_and_python_block_but_docker() -> None:
    # The tour: the README's steps 1 to 6, then docs/TOUR.md's (recording, online learning, imported policies).
    blocks = [*extract_file(REPO / "README.md", REPO), *extract_file(REPO / "docs/TOUR.md", REPO)]
    runnable = [block for block in blocks if not block.skip]
    assert [block.lang for block in runnable] == ["bash", "bash", "bash", "bash", "python", "bash", "bash", "python",
                                                  "bash", "bash", "python", "python"]  # fmt: skip
    assert [block.skip for block in blocks if block.skip] == ["needs a Docker engine (and its image downloads); "
                                                              "not part of make run",
                                                              "needs minari (pip install minari); not installed by "
                                                              "make run",
                                                              "needs stable-baselines3 (pip install stable-baselines3, "
                                                              "which brings torch); not part of make run"]  # fmt: skip
    slow = [block.first_line for block in runnable if block.slow]
    assert [line[: line.index(" (")] for line in slow] == ["# slow: about a minute", "# slow: about 2 minutes"]
    assert "trainer train" in runnable[2].code and "/sweeps" in runnable[-3].code
    assert '"ddpg_client", "experience"' in runnable[-2].code and "client.drive(" in runnable[-1].code
    # The first block waits for the bootstrap policy; every bash block that queries the service shows its answers.
    assert runnable[0].first_line.startswith("until curl -sf localhost:8000/readyz")
    assert all(block.answers for block in runnable if block.lang == "bash" and not block.slow and "curl" in block.code)
    assert all("localhost:8000" in block.code or "127.0.0.1:8000" in block.code for block in runnable[3:])


def test_the_documents_run_exist_and_have_runnable_blocks() -> None:
    for name in DOCUMENTS:
        assert [block for block in extract_file(REPO / name, REPO) if not block.skip], name


def test_a_block_fails_on_its_exit_status_an_answer_of_another_shape_or_its_timeout(tmp_path: Path) -> None:
    def outcome(code: str, timeout: float = 30.0) -> str:
        block = extract(f"```bash\n{code}```\n", "t.md")[0]
        return run_block(block, 8000, tmp_path, timeout, dict(os.environ)).error

    assert outcome('echo \'{"id":3}\'\n# {"id":1}\n') == ""
    assert outcome("false\necho never\n").startswith("exited with 1")
    assert "null" in outcome('echo null\n# {"id":1}\n')  # `jq .id` of an error body
    assert outcome("sleep 5\n", timeout=0.5).startswith("timed out after")
    assert outcome("false | cat\necho never\n").startswith("exited with 1")  # pipefail: a pipe fails with its part


def test_a_missing_tool_is_named_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("bash", "curl"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "need jq on PATH" in preflight(0)
