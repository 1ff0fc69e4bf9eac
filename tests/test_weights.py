"""Weights: strict and safe loading, and downloads verified against a server on 127.0.0.1."""

import functools
import hashlib
import http.server
import pickle
import threading

import pytest
import torch

from itkdeepreg.nets import GradICONUNet
from itkdeepreg.zoo import WeightsSource, fetch, load_weights, read_state_dict


@pytest.fixture
def weights_file(tmp_path):
    torch.manual_seed(0)
    net = GradICONUNet(2)
    torch.nn.init.normal_(net.lastConv.weight)
    path = tmp_path / "served" / "weights.trch"
    path.parent.mkdir()
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture
def server(weights_file):
    """An HTTP server on 127.0.0.1 serving the weights file's folder."""
    folder = weights_file[0].parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_weights_load_strictly_into_a_fresh_model(weights_file):
    path, trained = weights_file
    model = load_weights(GradICONUNet(2), path)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


def test_missing_extra_and_misshapen_tensors_are_named(weights_file):
    path, _ = weights_file
    state = read_state_dict(path)
    model = GradICONUNet(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    missing = {k: v for k, v in state.items() if k != "lastConv.bias"}
    with pytest.raises(ValueError, match=r"missing lastConv.bias \[2\]"):
        load_weights(model, missing)
    with pytest.raises(ValueError, match="unexpected extra.weight"):
        load_weights(model, {**state, "extra.weight": torch.zeros(1)})
    misshapen = {**state, "downConvs.0.weight": torch.zeros(16, 2, 5, 5)}
    with pytest.raises(ValueError, match=r"downConvs.0.weight has shape \[16, 2, 5, 5\]"):
        load_weights(model, misshapen)
    with pytest.raises(
        ValueError, match=r"has shape \[16, 2, 3, 3\], the model needs \[16, 2, 3, 3, 3\]"
    ):
        load_weights(GradICONUNet(3), path)  # the 2D weights do not fit the 3D network
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_values_that_are_not_tensors_are_refused(weights_file):
    state = read_state_dict(weights_file[0])
    with pytest.raises(ValueError, match="not tensors: lastConv.bias"):
        load_weights(GradICONUNet(2), {**state, "lastConv.bias": [0.0, 0.0]})


def test_an_unverifiable_truncated_download_is_not_cached(weights_file, tmp_path):
    """No checksum and no Content-Length: the file must still read as weights to be kept."""
    payload = weights_file[0].read_bytes()[:5000]

    class Truncated(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()  # no Content-Length: the client cannot tell it was cut
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Truncated)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        source = WeightsSource(f"http://127.0.0.1:{httpd.server_address[1]}/w.trch", "w.trch")
        with pytest.raises(ValueError, match="download of .*w.trch is a truncated or corrupt"):
            fetch(source, cache=tmp_path / "cache", progress=False)
    finally:
        httpd.shutdown()
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_unusable_cache_directory_says_how_to_choose_another(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="ITKDEEPREG_CACHE"):
        fetch(
            WeightsSource("http://127.0.0.1:9/w.trch", "w.trch"),
            cache=blocker / "cache",
            progress=False,
        )


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_corrupt_and_missing_files_are_refused(tmp_path, weights_file):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    pickled = tmp_path / "pickled.trch"
    pickled.write_bytes(pickle.dumps({"lastConv.weight": Payload()}))
    with pytest.raises(ValueError, match="pickled Python objects beyond tensors.*builtins.print"):
        read_state_dict(pickled)
    truncated = tmp_path / "truncated.trch"
    truncated.write_bytes(weights_file[0].read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_state_dict(truncated)
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.trch")


def test_download_with_the_right_checksum_lands_in_the_cache(
    server, weights_file, tmp_path, monkeypatch
):
    path, trained = weights_file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path)
    source = WeightsSource(f"{server}/weights.trch", "model.trch", digest)
    fetched = fetch(source, cache=cache, progress=False)
    assert fetched == cache / "model.trch" and fetched.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "served"]  # not the cwd
    assert fetch(source, cache=cache, progress=False) == fetched  # cached: no second download
    load_weights(GradICONUNet(2), fetched)


def test_download_with_a_wrong_checksum_fails_and_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    source = WeightsSource(f"{server}/weights.trch", "model.trch", "0" * 64)
    with pytest.raises(ValueError, match="not the published one"):
        fetch(source, cache=cache, progress=False)
    assert list(cache.iterdir()) == []
    with pytest.raises(OSError, match="could not download"):
        fetch(WeightsSource(f"{server}/absent.trch", "absent.trch"), cache=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_a_failed_download_says_how_to_give_the_file_by_hand(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(OSError) as raised:
        fetch(WeightsSource(f"{server}/absent.trch", "absent.trch"), cache=cache, progress=False)
    message = str(raised.value)
    for needed in (
        f"{server}/absent.trch",
        "--weights FILE",
        str(cache / "absent.trch"),
        "sha256sum absent.trch > absent.trch.sha256",
        "ITKDEEPREG_CACHE",
    ):
        assert needed in message, needed
    pinned = WeightsSource(f"{server}/absent.trch", "absent.trch", "ab" * 32)
    with pytest.raises(OSError, match=f"its SHA-256 must be {'ab' * 32}"):
        fetch(pinned, cache=cache, progress=False)


def test_a_corrupted_cached_file_is_refused(server, weights_file, tmp_path):
    path, _ = weights_file
    source = WeightsSource(
        f"{server}/weights.trch", "model.trch", hashlib.sha256(path.read_bytes()).hexdigest()
    )
    cache = tmp_path / "cache"
    fetched = fetch(source, cache=cache, progress=False)
    fetched.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="delete it to download again"):
        fetch(source, cache=cache, progress=False)
