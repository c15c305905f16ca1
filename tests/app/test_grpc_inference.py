"""The Open Inference Protocol over gRPC (GRPC_PORT), driven by Triton's own client, `tritonclient.grpc`.

The service runs as users run it: `python -m app` with two uvicorn workers, both listening on GRPC_PORT. Every
action is checked against POST /act for the same observations; bad tensors, unknown models and versions, a missing
key and a missing policy get the protocol's status codes with the field named. Requests with FP32 `contents` (which
tritonclient never sends: it sends raw bytes) go through Triton's generated stub, so the wire format is Triton's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from pydantic import ValidationError
from tritonclient.grpc import service_pb2, service_pb2_grpc

from app.grpc_oip.server import GrpcPortError
from app.serving.runtime import NO_POLICY_RETRY_AFTER_SECONDS
from models.policy import NumpyActor
from tests.app.conftest import ApiFactory, SettingsFactory
from tests.app.factories import free_port, make_policy_bytes
from tests.app.servers import REPO, running, server_env, wait_until_ready

pytestmark = pytest.mark.slow

ACT_KEY = "grpc-act-key"
AUTH = {"authorization": f"Bearer {ACT_KEY}"}
MAX_BATCH = 300
OBSERVATIONS = np.array([[1.0, 0.0, 0.0], [0.5, -0.8660254, 1.5], [-0.3, 0.2, -7.0]], dtype=np.float32)


@dataclass(frozen=True)
class Service:
    http: str
    grpc_address: str
    grpc_port: int
    actor: NumpyActor


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("grpc")
    policy = make_policy_bytes(5, hidden_size=16)
    (tmp / "actor.safetensors").write_bytes(policy)
    port, grpc_port = free_port(), free_port()
    env = server_env(
        tmp / "data",
        HOST="127.0.0.1",
        PORT=str(port),
        GRPC_PORT=str(grpc_port),
        WORKERS="2",
        ACT_API_KEY=ACT_KEY,
        MAX_BATCH=str(MAX_BATCH),
        POLICY_FILE=str(tmp / "actor.safetensors"),
        EMBEDDED_WORKER="false",
        BOOTSTRAP_JOB="false",
    )
    log = tmp / "server.log"
    with running([sys.executable, "-m", "app"], env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, process, log)
        yield Service(base, f"127.0.0.1:{grpc_port}", grpc_port, NumpyActor.from_bytes(policy))


@pytest.fixture
def client(service: Service) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(service.grpc_address) as grpc_client:
        yield grpc_client


@pytest.fixture
def stub(service: Service) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(service.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def http_actions(service: Service, observations: np.ndarray) -> np.ndarray:
    response = httpx.post(f"{service.http}/act", json={"observations": observations.tolist()}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return np.array(response.json()["actions"], dtype=np.float32)


def observation_input(observations: np.ndarray, name: str = "observation", datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(observations.shape), datatype)
    tensor.set_data_from_numpy(observations)  # raw_input_contents, tritonclient's only way
    return tensor


def contents_request(values: list[float], shape: list[int], model: str = "default") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id="contents")
    tensor = request.inputs.add(name="observation", datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(values)
    return request


def grpc_error(call: Callable[..., object], *args: object, **kwargs: object) -> triton.InferenceServerException:
    """The exception `call(*args, **kwargs)` raises (it must raise)."""
    with pytest.raises(triton.InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


def listening_sockets(port: int) -> int:
    """How many sockets listen on `port` on this machine (/proc/net/tcp*: local address, state 0A = LISTEN)."""
    port_hex = f":{port:04X}"
    listening = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            listening += fields[1].endswith(port_hex) and fields[3] == "0A"
    return listening


def eventually(predicate: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Whether `predicate` holds within `seconds` (a bound on waiting, not a timing assertion)."""
    stop = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > stop:
            return False
        time.sleep(0.1)
    return True


def test_both_workers_listen_on_the_grpc_port(service: Service) -> None:
    """WORKERS=2: each worker process has its own listening socket on GRPC_PORT (SO_REUSEPORT). /readyz answered
    from one of them; the other may still be starting."""
    eventually(lambda: listening_sockets(service.grpc_port) >= 2)
    assert listening_sockets(service.grpc_port) == 2


def test_health_and_metadata(client: triton.InferenceServerClient, service: Service) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    for name in ("default", "pendulum", "1"):
        assert client.is_model_ready(name)
    assert client.is_model_ready("pendulum", "1")
    metadata = client.get_model_metadata("pendulum", as_json=True)
    assert metadata["name"] == "pendulum" and metadata["versions"] == ["1"] and metadata["platform"] == "numpy"
    assert metadata["inputs"] == [{"name": "observation", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert metadata["outputs"] == [{"name": "action", "datatype": "FP32", "shape": ["-1", "1"]}]
    # As GET /v2/models/pendulum answers.
    http = httpx.get(f"{service.http}/v2/models/pendulum").json()
    assert [int(d) for d in metadata["inputs"][0]["shape"]] == http["inputs"][0]["shape"]
    assert client.get_server_metadata(as_json=True)["name"] == "ddpg-policy-service"


@pytest.mark.parametrize("model", ["default", "pendulum", "1"])
def test_infer_raw_matches_act(client: triton.InferenceServerClient, service: Service, model: str) -> None:
    result = client.infer(
        model,
        [observation_input(OBSERVATIONS)],
        outputs=[triton.InferRequestedOutput("action")],
        request_id="42",
        headers=AUTH,
    )
    response = result.get_response()
    assert response.id == "42" and response.model_version == "1"
    actions = result.as_numpy("action")
    assert actions is not None and actions.dtype == np.float32 and actions.shape == (3, 1)
    np.testing.assert_array_equal(actions, http_actions(service, OBSERVATIONS))
    np.testing.assert_allclose(actions, service.actor.act(OBSERVATIONS), rtol=1e-6)


def test_infer_one_observation_and_a_batch_of_256(client: triton.InferenceServerClient, service: Service) -> None:
    batch = np.random.default_rng(0).uniform(-1, 1, size=(256, 3)).astype(np.float32)
    for observations in (OBSERVATIONS[:1], batch):
        actions = client.infer("default", [observation_input(observations)], headers=AUTH).as_numpy("action")
        np.testing.assert_array_equal(actions, http_actions(service, observations))


def test_infer_with_fp32_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub, service: Service) -> None:
    """Values in `contents.fp32_contents` (not raw): the actions come back the same way."""
    request = contents_request(OBSERVATIONS.reshape(-1).tolist(), [3, 3], model="pendulum")
    response = stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert response.id == "contents" and response.model_version == "1" and not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("action", "FP32", [3, 1])
    actions = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(3, 1)
    np.testing.assert_array_equal(actions, http_actions(service, OBSERVATIONS))


def test_bad_tensors_are_invalid_argument_naming_the_field(
    client: triton.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    def infer(*inputs: triton.InferInput, outputs: list[triton.InferRequestedOutput] | None = None) -> str:
        error = grpc_error(client.infer, "default", list(inputs), outputs=outputs, headers=AUTH)
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error
        return str(error.message())

    nan = OBSERVATIONS.copy()
    nan[1, 2] = np.nan
    assert "input 'observation' must have shape [n, 3]" in infer(observation_input(OBSERVATIONS[:, :2]))
    assert "input 'observation' must have shape [n, 3]" in infer(observation_input(OBSERVATIONS.reshape(-1)))
    int_input = observation_input(OBSERVATIONS.astype(np.int32), datatype="INT32")
    assert "input 'observation' must have datatype FP32, got 'INT32'" in infer(int_input)
    assert infer(observation_input(nan)).startswith("observation[1][2] must be a finite number")
    assert "unexpected input 'obs'" in infer(observation_input(OBSERVATIONS, name="obs"))
    too_many = np.zeros((MAX_BATCH + 1, 3), dtype=np.float32)
    assert f"must hold between 1 and {MAX_BATCH} observations" in infer(observation_input(too_many))
    assert "unknown output 'torque'" in infer(
        observation_input(OBSERVATIONS), outputs=[triton.InferRequestedOutput("torque")]
    )

    def raw_call(request: service_pb2.ModelInferRequest) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=tuple(AUTH.items()))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
        return caught.value

    short = service_pb2.ModelInferRequest(model_name="default")
    short.inputs.add(name="observation", datatype="FP32", shape=[1, 3])
    short.raw_input_contents.append(OBSERVATIONS[0].tobytes()[:8])
    message = raw_call(short).details()
    assert message == "raw_input_contents[0] (input 'observation') must be 12 bytes of little-endian FP32", message
    nan_contents = contents_request([0.1, float("nan"), 0.3], [1, 3])
    assert raw_call(nan_contents).details().startswith("observation.contents.fp32_contents[1] must be a finite")
    assert "has 2 numbers but its shape [1, 3] needs 3" in raw_call(contents_request([0.1, 0.2], [1, 3])).details()
    both = contents_request([0.1, 0.2, 0.3], [1, 3])
    both.raw_input_contents.append(OBSERVATIONS[0].tobytes())
    assert "both `contents` and raw_input_contents" in raw_call(both).details()
    ints = service_pb2.ModelInferRequest(model_name="default")
    ints.inputs.add(name="observation", datatype="FP32", shape=[1, 3]).contents.int_contents.extend([1, 2, 3])
    assert raw_call(ints).details().startswith("observation.contents.int_contents:")


def test_a_missing_model_name_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    error = grpc_error(client.infer, "", [observation_input(OBSERVATIONS)], headers=AUTH)
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and str(error.message()).startswith("model_name:")
    error = grpc_error(client.get_model_metadata, "")
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and str(error.message()).startswith("name:")


def test_unknown_models_and_versions_are_not_found(client: triton.InferenceServerClient) -> None:
    for model, version in [("boat", ""), ("pendulum", "999"), ("default", "7"), ("1", "2")]:
        for error in (
            grpc_error(client.infer, model, [observation_input(OBSERVATIONS)], model_version=version, headers=AUTH),
            grpc_error(client.get_model_metadata, model, version),
            grpc_error(client.is_model_ready, model, version),
        ):
            assert error.status() == "StatusCode.NOT_FOUND", (model, version, error)
            assert repr(model) in str(error.message()) or model in str(error.message())


def test_inference_needs_the_act_key(client: triton.InferenceServerClient) -> None:
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": ACT_KEY}):
        error = grpc_error(client.infer, "default", [observation_input(OBSERVATIONS)], headers=headers)
        assert error.status() == "StatusCode.UNAUTHENTICATED", error
        assert "Authorization: Bearer <key>" in str(error.message())
    # Metadata and readiness need no key, as over HTTP.
    assert client.is_model_ready("default")


def test_grpc_calls_are_in_the_request_metrics(client: triton.InferenceServerClient, service: Service) -> None:
    client.infer("default", [observation_input(OBSERVATIONS)], headers=AUTH)
    grpc_error(client.infer, "default", [observation_input(OBSERVATIONS)])
    route = 'route="/inference.GRPCInferenceService/ModelInfer"'
    expected = [
        f'http_requests_total{{method="GRPC",{route},status="200"}}',
        f'http_requests_total{{method="GRPC",{route},status="401"}}',
        f'http_request_duration_seconds_count{{method="GRPC",{route},status="200"}}',
    ]
    # Two workers: each publishes its counts to the other's scrapes once a second, so a scrape answered by the other
    # process shows them up to a second later. Eventually every scrape does: four in a row (each on a new connection,
    # answered by either process).
    scrapes: list[str] = []

    def counted_in_every_scrape() -> bool:
        scrapes[:] = [httpx.get(f"{service.http}/metrics").text for _ in range(4)]
        return all(line in text for text in scrapes for line in expected)

    assert eventually(counted_in_every_scrape), [seen for seen in scrapes[-1].splitlines() if "GRPC" in seen]


def test_without_a_policy_inference_is_unavailable(make_api: ApiFactory) -> None:
    """An app without any policy (its lifespan serves gRPC in this test process): not ready, UNAVAILABLE."""
    port = free_port()
    make_api(grpc_port=port)
    with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert client.is_server_live()
        assert not client.is_server_ready()
        assert not client.is_model_ready("default")
        error = grpc_error(client.infer, "default", [observation_input(OBSERVATIONS)])
        assert error.status() == "StatusCode.UNAVAILABLE", error
        assert "no policy is loaded yet" in str(error.message())
        assert grpc_error(client.get_model_metadata, "default").status() == "StatusCode.UNAVAILABLE"
    # As HTTP's Retry-After: when to ask again, in the trailing metadata.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(contents_request([0.1, 0.2, 0.3], [1, 3]))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("retry-after", str(NO_POLICY_RETRY_AFTER_SECONDS)) in tuple(caught.value.trailing_metadata())


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    """The committed modules are what `python -m app.grpc_oip.generate` makes from the committed .proto: the same
    serialized descriptor and the same service code (the generator's version stamps aside)."""
    generated = REPO / "app" / "grpc_oip" / "generated"
    code = (
        "import sys, pathlib; import app.grpc_oip.generate as g; g.GENERATED = pathlib.Path(sys.argv[1]); "
        "sys.exit(g.main())"
    )
    copy = tmp_path / "generated"
    copy.mkdir()
    (copy / "grpc_predict_v2.proto").write_bytes((generated / "grpc_predict_v2.proto").read_bytes())
    subprocess.run([sys.executable, "-c", code, str(copy)], cwd=REPO, check=True)

    def descriptor(directory: Path) -> str:
        text = (directory / "grpc_predict_v2_pb2.py").read_text()
        assert "_POOL = _descriptor_pool.DescriptorPool()" in text  # a pool of its own (app/grpc_oip/generate.py)
        return text.split("_POOL.AddSerializedFile(", 1)[1].split(")\n", 1)[0]

    def service_code(directory: Path) -> list[str]:
        lines = (directory / "grpc_predict_v2_pb2_grpc.py").read_text().splitlines()
        return [line for line in lines if not line.startswith("GRPC_GENERATED_VERSION")]

    assert descriptor(copy) == descriptor(generated)
    assert service_code(copy) == service_code(generated)


def test_a_taken_grpc_port_stops_start_up_naming_it(make_api: ApiFactory) -> None:
    with socket.socket() as taken:  # a plain listener (no SO_REUSEPORT): gRPC cannot share its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GrpcPortError, match=f"GRPC_PORT: cannot listen on 127.0.0.1:{port}"):
            make_api(grpc_port=port)


def test_grpc_port_settings(make_settings: SettingsFactory) -> None:
    assert make_settings().grpc_port is None  # off unless asked for
    assert make_settings(grpc_port="").grpc_port is None  # compose's `GRPC_PORT=${GRPC_PORT:-}`
    assert make_settings(grpc_port=8001).grpc_port == 8001
    for bad in (0, 70000):
        with pytest.raises(ValidationError, match="grpc_port"):
            make_settings(grpc_port=bad)
    with pytest.raises(ValidationError, match="GRPC_PORT 8000 is PORT too"):
        make_settings(port=8000, grpc_port=8000)
