"""Bad weights files (issue 24): each refused with a message that says what the file holds and
why, before anything changes: a model's weights, the weights cache, a training folder."""

import functools
import hashlib
import http.server
import pickle
import threading

import pytest
import torch
from torch import nn

from itkdeepreg.nets import GradICONUNet
from itkdeepreg.train.config import read_config, run
from itkdeepreg.zoo import WeightsSource, fetch, load_weights, read_state_dict

CALLS = []  # what a payload appends to, were it ever run


def _record_call(what):
    CALLS.append(what)


class Payload:
    """Unpickling calls _record_call: harmless, and visible."""

    def __reduce__(self):
        return (_record_call, ("the payload ran",))


class MyClass:
    pass


def unet_state():
    torch.manual_seed(0)
    return GradICONUNet(2).state_dict()


def folder_listing(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))}


def refusal(call, *args) -> str:
    with pytest.raises(ValueError) as raised:
        call(*args)
    message = str(raised.value)
    assert "\n" not in message  # one line
    return message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_payload_is_refused_naming_what_loading_would_call(tmp_path):
    payload = {**unet_state(), "lastConv.weight": Payload()}
    assert pickle.loads(pickle.dumps(payload)) and CALLS == ["the payload ran"]  # it is live
    CALLS.clear()
    saved, pickled, instance = tmp_path / "saved.pt", tmp_path / "pickled.pt", tmp_path / "obj.pt"
    torch.save(payload, saved)
    pickled.write_bytes(pickle.dumps(payload))
    torch.save({**unet_state(), "extra": MyClass()}, instance)
    model = GradICONUNet(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for path, name in [(saved, "_record_call"), (pickled, "_record_call"), (instance, "MyClass")]:
        for message in (refusal(read_state_dict, path), refusal(load_weights, model, path)):
            assert str(path) in message
            assert "pickled Python objects beyond tensors" in message
            assert f"test_bad_weights.{name}" in message
    assert CALLS == []  # never called
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_corrupt_truncated_and_foreign_files_say_so(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(unet_state(), whole)
    truncated, text, empty = tmp_path / "cut.pt", tmp_path / "text.pt", tmp_path / "empty.pt"
    truncated.write_bytes(whole.read_bytes()[:3000])
    text.write_text("hello, not weights\n")
    empty.write_bytes(b"")
    for path, why in [(truncated, "truncated"), (text, "not a torch file"), (empty, "empty")]:
        message = refusal(read_state_dict, path)
        assert str(path) in message and why in message
        assert "pickled" not in message and "code" not in message


def test_a_file_that_is_not_a_state_dict_says_what_it_holds(tmp_path):
    state = unet_state()
    listed, checkpoint = tmp_path / "list.pt", tmp_path / "checkpoint.pt"
    torch.save(list(state.values()), listed)
    torch.save({"model": state, "step": 3}, checkpoint)
    assert "holds a list" in refusal(read_state_dict, listed)
    message = refusal(read_state_dict, checkpoint)
    assert "step (int)" in message
    assert "'model' entry is a state dict" in message and "torch.save(" in message


def test_integer_complex_and_non_finite_tensors_are_refused_by_name():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state["1.num_batches_tracked"].dtype == torch.int64
    bad = {
        "0.weight": torch.ones(2, 1, 3, 3, dtype=torch.int32),
        "0.bias": torch.zeros(2, dtype=torch.complex64),
        "1.weight": torch.full((2,), float("nan")),
        "1.running_var": torch.tensor([1.0, float("inf")]),
    }
    for name, tensor in bad.items():
        message = refusal(load_weights, model, {**state, name: tensor})
        assert name in message
    message = refusal(load_weights, model, {**state, **bad})
    assert all(name in message for name in bad)
    assert "int32" in message and "complex64" in message
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # untouched
    counted = {**state, "1.num_batches_tracked": torch.tensor(7)}  # integer buffers still load
    load_weights(model, counted)
    assert int(model.state_dict()["1.num_batches_tracked"]) == 7


@pytest.fixture
def server(tmp_path):
    """A server on 127.0.0.1 serving a weights file; ``.requests`` counts its downloads."""
    folder = tmp_path / "served"
    folder.mkdir()
    torch.save(unet_state(), folder / "weights.trch")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/weights.trch"
    yield WeightsSource(url, "model.trch"), requests  # no SHA-256 pinned
    httpd.shutdown()


def test_a_planted_cache_file_is_refused(server, tmp_path):
    source, requests = server
    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(unet_state(), cache / "model.trch")  # valid weights, but never downloaded
    message = refusal(fetch, source, cache, False)
    assert str(cache / "model.trch") in message and "delete it to download again" in message
    assert requests == []


def test_an_unpinned_download_is_recorded_reused_and_a_change_refused(server, tmp_path):
    source, requests = server
    cache = tmp_path / "cache"
    fetched = fetch(source, cache, progress=False)
    record = cache / "model.trch.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(fetched.read_bytes()).hexdigest()
    assert fetch(source, cache, progress=False) == fetched and len(requests) == 1  # reused
    load_weights(GradICONUNet(2), fetched)
    state = unet_state()
    state["lastConv.bias"] += 1
    torch.save(state, fetched)  # still valid weights, but not the ones downloaded
    message = refusal(fetch, source, cache, False)
    assert "changed since it was downloaded" in message and "delete it to download again" in message
    fetched.unlink()  # as the message says: downloaded again
    assert fetch(source, cache, progress=False) == fetched and len(requests) == 2
    assert sorted(p.name for p in cache.iterdir()) == ["model.trch", "model.trch.sha256"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", ["payload", "corrupt"])
def test_resuming_from_a_bad_checkpoint_leaves_the_folder_as_it_was(tmp_path, content):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("kept as it is")
    if content == "payload":
        torch.save(
            {"model": {"w": Payload()}, "optimizer": {}, "step": 1}, output / "checkpoint.pt"
        )
    else:
        (output / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    before = folder_listing(output)
    config = read_config(
        None,
        [
            "model.shape=[32, 32]",
            "model.levels=1",
            "model.refinements=0",
            "model.down_channels=[8, 16, 16, 32, 32]",
            "model.up_channels=[8, 16, 16, 16, 16]",
            "train.steps=1",
            f"train.output='{output}'",
        ],
    )
    message = refusal(run, config, False)
    assert f"cannot resume from {output / 'checkpoint.pt'}" in message
    assert ("test_bad_weights._record_call" if content == "payload" else "truncated") in message
    assert folder_listing(output) == before and CALLS == []
