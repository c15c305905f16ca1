"""app.infra.loop_metrics exposes what prometheus_client's own Counter and Histogram expose for the same data."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.infra.loop_metrics import LoopCounter, LoopHistogram, ProcessSnapshots

BUCKETS = (0.5, 1, 2.5, 10, 100)
LABELS = ("method", "route")


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items())), round(sample.value, 9))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    disable_created_metrics()  # as app.infra.metrics does
    return CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)


observations = st.lists(
    st.tuples(
        st.sampled_from(["GET", "POST"]),
        st.sampled_from(["/act", "/jobs/{job_id}"]),
        # Bucket bounds themselves included: `le` means less than or equal.
        st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.5, 10.0, 100.0, 1e6]), st.floats(0, 200, allow_nan=False)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(observations)
def test_labelled_counter_and_histogram_expose_what_prometheus_client_does(
    data: list[tuple[str, str, float]],
) -> None:
    ours, theirs = _registries()
    counter = LoopCounter("requests", "doc", LABELS)
    histogram = LoopHistogram("latency", "doc", LABELS, buckets=BUCKETS)
    ours.register(counter)
    ours.register(histogram)
    reference_counter = Counter("requests", "doc", LABELS, registry=theirs)
    reference_histogram = Histogram("latency", "doc", LABELS, buckets=BUCKETS, registry=theirs)
    for method, route, value in data:
        counter.labels(method, route).inc()
        histogram.labels(method, route).observe(value)
        reference_counter.labels(method, route).inc()
        reference_histogram.labels(method, route).observe(value)
    assert _samples(ours) == _samples(theirs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 50_000), max_size=40))
def test_unlabelled_histogram_matches_including_values_beyond_the_last_bucket(sizes: list[int]) -> None:
    ours, theirs = _registries()
    histogram = LoopHistogram("batch", "doc", buckets=(1, 2, 4, 1024))
    ours.register(histogram)
    reference = Histogram("batch", "doc", buckets=(1, 2, 4, 1024), registry=theirs)
    for size in sizes:
        histogram.observe(size)
        reference.observe(size)
    assert _samples(ours) == _samples(theirs)


def test_unlabelled_counter_and_a_name_clash_with_another_collector() -> None:
    registry = CollectorRegistry(auto_describe=True)
    counter = LoopCounter("jobs_started", "doc")
    registry.register(counter)
    counter.inc()
    counter.inc(2.5)
    assert registry.get_sample_value("jobs_started_total") == 3.5
    # Registering describes the families, so a duplicate name is refused as prometheus_client refuses its own.
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("jobs_started", "doc", registry=registry)


def _process(directory: Path, name: str) -> tuple[LoopCounter, LoopHistogram, ProcessSnapshots]:
    """The loop metrics of one worker process; `name` stands in for its pid (one test process plays several)."""
    counter = LoopCounter("requests", "doc", LABELS)
    histogram = LoopHistogram("batch", "doc", buckets=(1, 4, 16))
    snapshots = ProcessSnapshots(directory, [counter, histogram])
    snapshots.path = directory / f"{ProcessSnapshots.PREFIX}{name}.json"
    return counter, histogram, snapshots


def test_process_snapshots_sum_every_process_and_count_the_scraping_one_live(tmp_path: Path) -> None:
    counter_a, histogram_a, snapshots_a = _process(tmp_path, "a")
    counter_b, histogram_b, snapshots_b = _process(tmp_path, "b")
    registry = CollectorRegistry()
    registry.register(snapshots_a)  # process a answers the scrape
    counter_a.labels("POST", "/act").inc()
    histogram_a.observe(1)
    counter_b.labels("POST", "/act").inc(2)
    counter_b.labels("GET", "/jobs/{job_id}").inc()
    histogram_b.observe(20)
    # b has not published yet: only a's live values.
    assert registry.get_sample_value("requests_total", {"method": "POST", "route": "/act"}) == 1.0
    snapshots_b.write()
    counter_a.labels("POST", "/act").inc()  # after b's write; a's own values are always current
    assert registry.get_sample_value("requests_total", {"method": "POST", "route": "/act"}) == 4.0
    assert registry.get_sample_value("requests_total", {"method": "GET", "route": "/jobs/{job_id}"}) == 1.0
    assert registry.get_sample_value("batch_bucket", {"le": "1.0"}) == 1.0
    assert registry.get_sample_value("batch_bucket", {"le": "16.0"}) == 1.0
    assert registry.get_sample_value("batch_bucket", {"le": "+Inf"}) == 2.0
    assert registry.get_sample_value("batch_sum") == 21.0
    # a's own file is ignored by a's scrape (live values instead), or everything of a would count twice.
    snapshots_a.write()
    assert registry.get_sample_value("requests_total", {"method": "POST", "route": "/act"}) == 4.0


def test_a_damaged_snapshot_is_skipped_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    counter, _, snapshots = _process(tmp_path, "a")
    counter.labels("POST", "/act").inc()
    (tmp_path / f"{ProcessSnapshots.PREFIX}broken.json").write_text('{"requests": [[["POST", "/a')
    registry = CollectorRegistry()
    registry.register(snapshots)
    assert registry.get_sample_value("requests_total", {"method": "POST", "route": "/act"}) == 1.0
    assert "skipping metrics snapshot" in caplog.text
