"""Fixtures shared by every test module. The project is installed (.ci/setup: `pip install -e .`), so the tests import
it as every other process of the venv does."""

import os

import pytest


@pytest.fixture(autouse=True)
def aws_requests_match_the_service_model(request):
    """In the AWS tests, a request that breaks botocore's model of its operation fails the test that sent it."""
    if not getattr(getattr(request.node, "module", None), "__name__", "").startswith("test_aws_"):
        yield None
        return
    from botocore_model_check import ModelCheck

    check = ModelCheck().install()
    yield check
    check.uninstall()
    if check.found:
        pytest.fail("requests that AWS would refuse (botocore's service model):\n  " + "\n  ".join(check.found),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def session_tracking_store(tmp_path_factory):
    """One MLflow store for every training of the session (MLFLOW_TRACKING_URI, which train.py and `invoke train`
    follow): runs stay out of the repository's build/mlflow, and a new SQLite store's schema migrations (seconds)
    are paid once instead of once per training. Tests about tracking give their own stores."""
    from training.tracking import store_uri

    store = tmp_path_factory.mktemp("mlflow-session")
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store_uri(store)
    yield store
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def tiny_image_folder(tmp_path_factory):
    """A tiny generated ImageFolder set: 3 classes (Red circle, Green square, Blue triangle), 32 px JPEGs."""
    from training import synthetic

    root = tmp_path_factory.mktemp("tiny-data") / "shapes"
    return synthetic.make_synthetic_dataset(root, classes=3, split_sizes={"train": 8, "valid": 4, "test": 4},
                                            image_size=40, seed=1)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, tiny_image_folder):
    """A real model directory (model.pth, model_config.json, code/) from train.main: resnet18, 1 epoch, 32 px.

    Its model.tar.gz is next to it: trained_model_dir.parent / "model.tar.gz".
    """
    from training import train

    work = tmp_path_factory.mktemp("trained")
    args = train.parse_args([
        "--data", str(tiny_image_folder), "--model-dir", str(work / "model"), "--output-dir", str(work / "output"),
        "--checkpoint-dir", str(work / "checkpoints"), "--archive", str(work / "model.tar.gz"),
        "--arch", "resnet18", "--weights", "none", "--mode", "finetune", "--image-size", "32", "--epochs", "1",
        "--batch-size", "8", "--num-workers", "0", "--threads", "1"])
    train.main(args)
    return work / "model"


@pytest.fixture(scope="session")
def job_output_archive(tmp_path_factory, tiny_image_folder):
    """What a SageMaker job's output.tar.gz holds with no tracking server: the output folder of a real 2-epoch
    train.py run, with the run in its own store (mlflow/), as bytes; and that run as MLflow reads it. The folder
    it was written in is gone, as /opt/ml is for the job's artifacts when the archive is copied. Once per session:
    MLflow keeps an engine per store URI, which a second store at the same path would find stale."""
    import io
    import shutil
    import tarfile
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from training import train, tracking

    work = tmp_path_factory.mktemp("job")
    train.main(train.parse_args([
        "--data", str(tiny_image_folder), "--model-dir", str(work / "model"), "--output-dir", str(work / "output"),
        "--checkpoint-dir", str(work / "ck"), "--tracking-uri", tracking.output_store_uri(work / "output"),
        "--arch", "resnet18", "--weights", "none", "--mode", "finetune", "--image-size", "32", "--epochs", "2",
        "--patience", "0", "--batch-size", "8", "--num-workers", "0", "--threads", "1"]))
    source = MlflowClient(tracking.output_store_uri(work / "output"))
    run = source.search_runs([source.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id])[0]
    history = {key: [(m.step, m.value) for m in source.get_metric_history(run.info.run_id, key)]
               for key in run.data.metrics}
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        for path in sorted((work / "output").rglob("*")):
            tar.add(path, arcname=path.relative_to(work / "output").as_posix(), recursive=False)
    model_bytes = (work / "model" / "model.pth").read_bytes()
    shutil.rmtree(work)
    return SimpleNamespace(data=packed.getvalue(), run=run, history=history, model_bytes=model_bytes)


CANARY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIACANARY0000000000", "AWS_SECRET_ACCESS_KEY": "canary-secret-key-0000",
                      "AWS_SESSION_TOKEN": "canary-session-token-0000"}


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory, trained_model_dir):
    """One running local stack for the run: endpoint on the toolkit runtime (AWS's SageMaker toolkit on TorchServe,
    as SageMaker serves it: the tests fail rather than fall back without Java) and function, real processes, serving
    trained_model_dir, started with local/stack.py's deploy and stopped at the end.

    Attributes: settings (LocalSettings), images (a loopback ImageServer the endpoint may fetch from: deployed with
    the allow-list 127.0.0.1/32 and a 5 s image fetch timeout), function / endpoint (boto3 lambda and
    sagemaker-runtime clients, one attempt each, so a test sees every error), new_function_client() (another such
    lambda client, one per thread for concurrent callers), canaries (fake AWS credentials in the deploying
    environment, which must not reach the servers). Tests that stop the stack must deploy their own.
    """
    from types import SimpleNamespace
    from unittest import mock

    import boto3
    from botocore.config import Config

    from bench.loopback_servers import ImageServer
    from local import stack
    from local.ports import free_port
    from local.settings import LocalSettings

    root = tmp_path_factory.mktemp("local-stack")
    settings = LocalSettings(
        state_dir=root / "state", endpoint_port=free_port(), function_port=free_port(), model_dir=trained_model_dir,
        archive=trained_model_dir.parent / "model.tar.gz", function_zip=root / "function.zip",
        url_allow_networks="127.0.0.1/32", image_fetch_timeout_s=5.0, endpoint_runtime="toolkit")
    with ImageServer() as images:
        with mock.patch.dict(os.environ, CANARY_CREDENTIALS):
            stack.deploy(settings, progress=lambda message: None)

        def client(service, url):
            return boto3.client(service, endpoint_url=url, region_name=settings.region,
                                aws_access_key_id="test", aws_secret_access_key="test",
                                config=Config(connect_timeout=2, read_timeout=70, max_pool_connections=64,
                                              retries={"total_max_attempts": 1}))

        try:
            yield SimpleNamespace(settings=settings, images=images, canaries=CANARY_CREDENTIALS,
                                  function=client("lambda", settings.function_url),
                                  new_function_client=lambda: client("lambda", settings.function_url),
                                  endpoint=client("sagemaker-runtime", settings.endpoint_url))
        finally:
            stack.destroy(settings)
