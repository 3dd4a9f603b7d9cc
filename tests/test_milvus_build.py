"""Building into Milvus (Milvus Lite): sharded builds equal a single build, shard re-runs, CLI, store parsing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import TINY_CLIP_SPEC
from indexer import build_index, open_index
from indexer.__main__ import main
from indexer.index import MilvusIndex
from indexer.index.milvus_client import index_params_for
from indexer.index import HnswParams
from indexer.index import HNSW, MILVUS, StoreSpec, parse_store

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(index, queries) -> dict:
    items = {i: (index.get(i).label, index.get(i).row, index.get(i).source) for i in index.ids}
    results = [[(h.id, round(h.score, 4)) for h in index.search(vector=q, k=5)] for q in queries]
    return {"items": items, "results": results}


def test_three_shard_workers_equal_a_single_build(tiny_clip, gallery_dataset, tmp_path):
    gallery_dataset.save_to_disk(str(tmp_path / "saved"))
    single = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "single",
                         store=f"milvus:{tmp_path / 'single.db'}", batch_size=8)
    queries = single.vectors([0, 7, 13, 22])
    expected = _snapshot(single, queries)
    assert sorted(expected["items"]) == list(range(24))  # ids are the dataset rows
    single.close()

    store = f"milvus:{tmp_path / 'sharded.db'}"
    for worker in range(3):  # one process per worker in real life (see docs/MILVUS.md); sequential here
        part = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / f"shard{worker}", store=store,
                           num_shards=3, shard_index=worker, batch_size=4)
        assert part.build_report.embedded == 8
        part.close()
    sharded = open_index(tmp_path / "shard2", tiny_clip)
    try:
        assert isinstance(sharded, MilvusIndex) and len(sharded) == 24
        assert _snapshot(sharded, queries) == expected
        assert sharded.labels() == ["blue", "green", "red"]
        # image queries and image(id) go through the dataset recorded in meta.json, as for hnswlib
        assert sharded.search(gallery_dataset[5]["image"], k=1)[0].id == 5
        assert np.array_equal(np.asarray(sharded.image(5)), np.asarray(gallery_dataset[5]["image"].convert("RGB")))

        # a re-run of shard 1 replaces only its own rows: a stray row tagged 1/3 goes, an added image stays,
        # the other shards' rows are not rewritten
        stray = sharded.add_vectors(queries[:1], ["stray"], ["x"], [1000], shard="1/3")
        added = sharded.add_vectors(queries[1:2], ["mine"], [""], [None])
        before = {i: sharded.get(i).added for i in (0, 2, 3, 5)}  # shards 0 and 2
        touched = sharded.get(1).added
        sharded.close()
        again = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "shard1", store=store,
                            num_shards=3, shard_index=1, batch_size=4)
        assert again.build_report.embedded == 8
        assert stray[0] not in again and added[0] in again and len(again) == 25
        assert {i: again.get(i).added for i in (0, 2, 3, 5)} == before
        assert again.get(1).added > touched
        again.delete(added)
        assert _snapshot(again, queries) == expected
        # a plain (unsharded) build on a worker's directory embeds only what no shard wrote
        again.delete([4])
        again.close()
        whole = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "shard0", store=store)
        assert whole.build_report.embedded == 1 and _snapshot(whole, queries) == expected
        whole.close()
    finally:
        sharded.close()


def test_shards_need_a_shared_store_and_valid_indices(tiny_clip, gallery_dataset, tmp_path):
    gallery_dataset.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="--store milvus"):
        build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "ix", num_shards=3, shard_index=0)
    with pytest.raises(ValueError, match="shard-index 3"):
        build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "ix", num_shards=3, shard_index=3,
                    store=f"milvus:{tmp_path / 'm.db'}")


def test_single_milvus_build_resumes_from_its_checkpoint(tiny_clip, gallery_dataset, tmp_path):
    gallery_dataset.save_to_disk(str(tmp_path / "saved"))
    store = f"milvus:{tmp_path / 'm.db'}"
    first = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "ix", store=store, limit=10, batch_size=4)
    assert len(first) == 10 and first.source["next_row"] == 10
    first.close()
    more = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "ix", store=store, batch_size=4)
    assert more.build_report.embedded == 14 and len(more) == 24 and sorted(more.ids) == list(range(24))
    more.close()
    with pytest.raises(ValueError, match="another --out"):  # the directory belongs to another collection
        build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "ix", store=f"milvus:{tmp_path / 'other.db'}")


def test_a_build_without_meta_json_adopts_the_collection(tiny_clip, gallery_dataset, tmp_path):
    """An app replica with an empty index cache (or a build on another machine) embeds only missing rows."""
    gallery_dataset.save_to_disk(str(tmp_path / "saved"))
    store = f"milvus:{tmp_path / 'm.db'}"
    build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "a", store=store, batch_size=8).close()
    replica = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "b", store=store)
    assert replica.build_report.embedded == 0 and len(replica) == 24
    replica.delete([3, 4, 20])
    replica.close()
    other = build_index(tmp_path / "saved", model=tiny_clip, out=tmp_path / "c", store=store, batch_size=8)
    assert other.build_report.embedded == 3 and sorted(other.ids) == list(range(24))
    other.close()


def test_cli_build_and_search_on_milvus(tiny_clip, gallery_folder, tmp_path, capsys):
    out = tmp_path / "ix"
    store = f"milvus:{tmp_path / 'cli.db'}#gallery_cli"
    assert main(["build", "--dataset", str(gallery_folder), "--model", TINY_CLIP_SPEC, "--out", str(out),
                 "--store", store]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["count"] == 12
    meta = json.loads((out / "meta.json").read_text())
    assert meta["store"] == {"kind": "milvus", "uri": str(tmp_path / "cli.db"), "collection": "gallery_cli",
                             "index": {"index_type": "HNSW", "params": {"M": 24, "efConstruction": 200}}}
    query = sorted(gallery_folder.rglob("*.png"))[3]
    assert main(["search", "--index", str(out), "--image", str(query), "-k", "3"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(hits) == 3 and hits[0]["source"] == str(query.resolve())
    assert main(["search", "--index", str(out), "--text", "x", "--label", "Alphabet_0/character00"]) == 0
    labels = {json.loads(line)["label"] for line in capsys.readouterr().out.strip().splitlines()}
    assert labels == {"Alphabet_0/character00"}
    assert main(["search", "--index", str(out), "--text", "x", "--metric", "hamming"]) == 2  # hnswlib only
    assert "hnswlib" in capsys.readouterr().err
    # another process opens the collection (Milvus Lite: after this one let go of the file)
    item = hits[0]["id"]
    done = subprocess.run([sys.executable, "-m", "indexer", "search", "--index", str(out), "--id", str(item), "-k", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[0])["id"] == item and len(done.stdout.splitlines()) == 2


def test_store_specs_and_index_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("TWINSIGHT_STORE", raising=False)
    assert parse_store(None) == StoreSpec() and parse_store("hnsw").kind == HNSW
    monkeypatch.chdir(tmp_path)
    assert parse_store("milvus:g.db") == StoreSpec(MILVUS, str(tmp_path / "g.db"), None)  # absolute in meta.json
    assert parse_store("milvus:http://db:19530#faces") == StoreSpec(MILVUS, "http://db:19530", "faces")
    monkeypatch.setenv("TWINSIGHT_STORE", "milvus:http://db:19530")
    assert parse_store(None).uri == "http://db:19530"
    for bad in ("faiss:x", "milvus:", "milvus:x.db#1bad-name", "milvus:gallery"):
        with pytest.raises(ValueError):
            parse_store(bad)
    params = HnswParams()
    assert index_params_for(100_000, params)["index_type"] == "HNSW"
    ivf = index_params_for(20_000_000, params)
    assert ivf["index_type"] == "IVF_FLAT" and ivf["params"]["nlist"] == 17888 and ivf["nprobe"] == 1118


def test_app_runs_on_the_milvus_store_unchanged(tiny_clip_spec, gallery_folder, photos, tmp_path, monkeypatch):
    """--store reaches the gallery through runtime; the gallery tab's callbacks work as on hnswlib."""
    from PIL import Image

    import app
    from demo import gallery, runtime

    class Started(Exception):
        pass

    def stop(*_):
        raise Started

    monkeypatch.setattr(runtime, "warm_up", stop)
    monkeypatch.setattr(runtime, "settings", runtime.Settings())
    with pytest.raises(Started):
        app.main(["--model", tiny_clip_spec, "--gallery", str(gallery_folder), "--store", f"milvus:{tmp_path / 'app.db'}"])
    assert runtime.settings.store == f"milvus:{tmp_path / 'app.db'}"
    monkeypatch.setenv("TWINSIGHT_INDEX_DIR", str(tmp_path / "cache"))
    runtime.use_gallery(None)
    try:
        index = runtime.gallery()
        assert isinstance(index, MilvusIndex) and len(index) == 12
        query = sorted(gallery_folder.rglob("*.png"))[3]
        items, _, shown = gallery.search(str(query), "", 5)
        assert len(items) == 5 and index.get(shown[0]["id"]).source == str(query.resolve())
        path = tmp_path / "new.png"
        Image.fromarray(photos["rocket"]).save(path)
        message, _ = gallery.add_images([str(path)], "rockets")
        assert "Added 1" in message and len(index) == 13
        items, _, shown = gallery.search(str(path), "", 1, ["rockets"])
        assert index.get(shown[0]["id"]).label == "rockets"
        expected = Image.open(path).convert("RGB")
        expected.thumbnail((gallery.THUMBNAIL_SIDE, gallery.THUMBNAIL_SIDE))  # results are shown at display size
        assert Image.open(items[0][0]).size == expected.size
        saved = json.loads((index.path / "meta.json").read_text())
        assert saved["store"]["kind"] == "milvus" and (index.path / "images" / f"{shown[0]['id']}.png").is_file()
    finally:
        gallery_index = runtime._gallery
        runtime.use_gallery(None)
        if gallery_index is not None:
            gallery_index.close()
