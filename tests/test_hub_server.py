"""The local Hub stand-in (tests/hub_server.py) against the real huggingface_hub and transformers clients.

Clients run in subprocesses: huggingface_hub reads HF_ENDPOINT at import time.
"""

from pathlib import Path

import pytest
from helpers import run_client


def test_upload_folder_then_download_file_and_snapshot(hub, tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello hub")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))

    out = run_client(
        hub,
        f"""
        import json
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        api = HfApi()
        api.create_repo("user/files", exist_ok=True)
        commit = api.upload_folder(repo_id="user/files", folder_path={str(folder)!r})
        print(json.dumps({{
            "oid": commit.oid,
            "file": hf_hub_download("user/files", "sub/b.bin"),
            "snapshot": snapshot_download("user/files"),
            "listed": api.list_repo_files("user/files"),
        }}))
        """,
        tmp_path / "home",
    )

    assert hub.commits("user/files")[-1] == out["oid"]
    assert Path(out["file"]).read_bytes() == bytes(range(256))
    snapshot = Path(out["snapshot"])
    assert (snapshot / "a.txt").read_text() == "hello hub"
    assert (snapshot / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert sorted(out["listed"]) == [".gitattributes", "a.txt", "sub/b.bin"]
    assert hub.files("user/files") == {
        ".gitattributes": (snapshot / ".gitattributes").read_bytes(),
        "a.txt": b"hello hub",
        "sub/b.bin": bytes(range(256)),
    }


def test_download_at_an_older_commit(hub, tmp_path):
    out = run_client(
        hub,
        """
        import json
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        api.create_repo("user/history", exist_ok=True)
        first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="v.txt", repo_id="user/history").oid
        second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="v.txt", repo_id="user/history").oid
        print(json.dumps({
            "first": first,
            "second": second,
            "old": open(hf_hub_download("user/history", "v.txt", revision=first)).read(),
            "main": open(hf_hub_download("user/history", "v.txt")).read(),
            "old_sha": api.model_info("user/history", revision=first).sha,
        }))
        """,
        tmp_path / "home",
    )

    initial, first, second = hub.commits("user/history")
    assert (out["first"], out["second"]) == (first, second)
    assert (out["old"], out["main"]) == ("version 1", "version 2")
    assert out["old_sha"] == first
    assert hub.files("user/history", first)["v.txt"] == b"version 1"
    assert "v.txt" not in hub.files("user/history", initial)


def test_offline_mode_with_empty_cache_raises_the_offline_error(hub, tmp_path):
    out = run_client(
        hub,
        """
        import json
        from huggingface_hub import hf_hub_download
        try:
            hf_hub_download("user/anything", "config.json")
        except Exception as e:
            print(json.dumps([type(e).__name__, type(e.__cause__).__name__, str(e)]))
        """,
        tmp_path / "home",
        HF_HUB_OFFLINE="1",
    )

    error, cause, message = out
    assert (error, cause) == ("LocalEntryNotFoundError", "OfflineModeIsEnabled")
    assert "cannot find the requested files in the local cache" in message
    assert hub.requests == []


def test_missing_repo_revision_and_file_raise_the_hub_errors(hub, tmp_path):
    out = run_client(
        hub,
        """
        import json
        from huggingface_hub import HfApi, hf_hub_download
        HfApi().create_repo("user/errors")
        errors = []
        for repo, revision, filename in [
            ("user/missing", None, "config.json"),
            ("user/errors", "0" * 40, "config.json"),
            ("user/errors", None, "config.json"),
        ]:
            try:
                hf_hub_download(repo, filename, revision=revision)
            except Exception as e:
                errors.append(type(e).__name__)
        print(json.dumps(errors))
        """,
        tmp_path / "home",
    )

    assert out == ["RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"]


@pytest.mark.slow
def test_tiny_bert_push_to_hub_then_from_pretrained(hub, tmp_path):
    expected = tmp_path / "expected.pt"
    pushed = run_client(
        hub,
        f"""
        import json, torch
        from transformers import BertConfig, BertModel
        torch.manual_seed(0)
        config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32)
        model = BertModel(config).eval()
        with torch.no_grad():
            torch.save(model(torch.tensor([[1, 5, 7, 2]])).last_hidden_state, {str(expected)!r})
        print(json.dumps(model.push_to_hub("user/tiny").oid))
        """,
        tmp_path / "home_push",
    )
    assert hub.commits("user/tiny")[-1] == pushed
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files("user/tiny"))

    same = run_client(
        hub,
        f"""
        import json, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("user/tiny").eval()
        with torch.no_grad():
            output = model(torch.tensor([[1, 5, 7, 2]])).last_hidden_state
        print(json.dumps(type(model).__name__ == "BertModel" and torch.allclose(output, torch.load({str(expected)!r}), atol=1e-5, rtol=1e-5)))
        """,
        tmp_path / "home_load",
    )
    assert same is True
