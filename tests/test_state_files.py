"""Damaged user state files and odd names never lock a user out or write outside the project (issue 12)."""

import json
import os

import pytest

from toolkit.errors import ProjectError


def test_damaged_recent_projects_file_is_ignored(tmp_path, monkeypatch):
    from toolkit import project as proj_mod

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    p = proj_mod.init_project(tmp_path / "p", name="p")
    p.close()
    recent = proj_mod._recent_file()
    for content in ('[{"name": "no path"}, 3, null, {"path": 5}]', '{"path": "x"}', "not json", "\xff\xfe"):
        recent.write_text(content, encoding="utf-8", errors="surrogateescape")
        assert proj_mod.recent_projects() == []
        again = proj_mod.open_project(tmp_path / "p")  # opening still works and rewrites the list
        again.close()
        assert [i["path"] for i in proj_mod.recent_projects()] == [str((tmp_path / "p").resolve())]


def test_damaged_hash_cache_is_rebuilt(tmp_path, monkeypatch):
    from toolkit import models

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    f = tmp_path / "file.bin"
    f.write_bytes(b"abc")
    cache = models._hash_cache_path()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("[1, 2, 3]")
    assert models.file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert isinstance(json.loads(cache.read_text()), dict)


def test_binary_settings_and_broken_history_give_clear_errors(tmp_path):
    from toolkit.project import init_project, open_project

    p = init_project(tmp_path / "a", name="a")
    p.close()
    settings = tmp_path / "a" / "gradprompt.toml"
    settings.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(ProjectError, match="not a text file"):
        open_project(tmp_path / "a")
    p = init_project(tmp_path / "b", name="b")
    p.close()
    db = tmp_path / "b" / ".gradprompt" / "history.db"
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(db) + suffix):
            os.remove(str(db) + suffix)
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ProjectError, match="history backup") as info:
        open_project(tmp_path / "b")
    assert info.value.title == "History database problem"
    assert db.read_bytes().startswith(b"this is not a database")  # nothing changed


def test_prompt_library_paths_stay_inside_the_project_and_failed_writes_store_nothing(project, tmp_path):
    from toolkit.errors import DatasetError
    from toolkit.tasks import read_task_file

    csv = tmp_path / "t.csv"
    csv.write_text("input,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    with pytest.raises(DatasetError):
        read_task_file(csv, name="../../escape")
    project.store.add_task(project.id, read_task_file(csv, name="t"))
    task = project.store.list_tasks(project.id)[0]
    project.store.db.execute("update tasks set name = '../../escape' where id = ?", [task["id"]])  # a crafted file
    project.store.db.conn.commit()
    pid = project.add_prompt(task, "Say yes or no.", origin="manual")
    path = project.write_prompt_file(pid)
    assert (project.path / "prompts") in path.resolve().parents
    # A file where the library folder should be: the row is not kept either.
    blocker = project.path / "prompts" / "untitled"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    before = len(project.store.list_prompts(project.id))
    with pytest.raises(ProjectError, match="nothing was stored"):
        project.add_prompt(None, "An orphan prompt.", origin="manual")
    assert len(project.store.list_prompts(project.id)) == before


@pytest.mark.parametrize("damage", ["truncate-weights", "remove-tokenizer"])
def test_a_damaged_converted_torch_copy_is_rebuilt(real_tm, damage):
    """Issue 28: the converted safetensors copy of a GGUF, once truncated or missing tokenizer.json, used to fail
    every load until the user deleted the folder; it is converted again instead."""
    from toolkit.engine.torch_backend import converted_dir, load_torch_model
    from toolkit.models import get_model

    info = get_model()
    folder = converted_dir(info, real_tm.sha256)
    assert (folder / "model.safetensors").is_file()
    # the damage is made as a new file put in place: the session's model maps the old one (truncating a mapped
    # file in place would kill this process with SIGBUS, which is not what a user's damaged cache does to a fresh
    # process)
    if damage == "truncate-weights":
        weights = folder / "model.safetensors"
        cut = folder / "cut.tmp"
        cut.write_bytes(weights.read_bytes()[: 1 << 20])
        os.replace(cut, weights)
    else:
        (folder / "tokenizer.json").unlink()
    tm = load_torch_model(info, precision="fp32", device="cpu")
    assert tm.tokenizer("positive").input_ids == real_tm.tokenizer("positive").input_ids
    assert (folder / "model.safetensors").stat().st_size > 1 << 20 and (folder / "tokenizer.json").is_file()
