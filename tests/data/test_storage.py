"""Frame stores and create_lmdb: errors, BasicSR layout round trips, bounded memory."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
import torch

from data.storage import DiskStore, LmdbStore, StoreError, open_store, parse_meta_info
from scripts.create_lmdb import collect_septuplets, collect_tree, create_lmdb
from scripts.create_lmdb import main as create_lmdb_main
from tests.builders import real_frames, write_clip_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Two clips x 4 real carphone frames (144x176) as PNGs."""
    frames = real_frames("carphone_pristine.mp4", 0, 8)
    return write_clip_tree(tmp_path_factory.mktemp("tree") / "frames", {"000": frames[:4], "001": frames[4:]})


@pytest.fixture(scope="module")
def lmdb_path(tree, tmp_path_factory) -> Path:
    return create_lmdb(
        collect_tree(tree),
        tmp_path_factory.mktemp("lmdb") / "frames.lmdb",
        workers=2,
        batch_size=3,
        progress=False,
    )


def png_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_disk_store_reads_rgb_uint8(tree):
    store = DiskStore(tree)
    image = store.read("000/00000001")
    assert image.dtype == np.uint8 and image.shape == (144, 176, 3)
    np.testing.assert_array_equal(image, png_rgb(tree / "000" / "00000001.png"))
    assert store.keys() == [f"{c}/{i:08d}" for c in ("000", "001") for i in range(4)]
    assert store.keys("001") == [f"001/{i:08d}" for i in range(4)]
    assert store.shape("001/00000002") == (144, 176, 3)
    assert "000/00000003" in store and "000/00000004" not in store


def test_lmdb_round_trip_is_pixel_identical(tree, lmdb_path):
    disk, store = DiskStore(tree), LmdbStore(lmdb_path)
    assert store.keys() == disk.keys()
    for key in disk.keys():
        np.testing.assert_array_equal(store.read(key), png_rgb(tree / f"{key}.png"))
    lines = (lmdb_path / "meta_info.txt").read_text().splitlines()
    assert lines[0] == "000/00000000.png (144,176,3) -1"
    assert store.shape("001/00000000") == (144, 176, 3)
    assert not lmdb_path.with_name("frames.lmdb.tmp").exists()


def test_reencoded_lmdb_is_pixel_identical(tree, tmp_path):
    out = create_lmdb(collect_tree(tree), tmp_path / "l1.lmdb", workers=0, compress_level=1, progress=False)
    assert (out / "meta_info.txt").read_text().splitlines()[0] == "000/00000000.png (144,176,3) 1"
    store = LmdbStore(out)
    for key in DiskStore(tree).keys():
        np.testing.assert_array_equal(store.read(key), png_rgb(tree / f"{key}.png"))


def test_reads_lmdb_written_the_basicsr_way(tree, tmp_path):
    """An LMDB made like BasicSR's tools (imencode level 1, its meta lines) reads identically."""
    path = tmp_path / "basicsr.lmdb"
    env = lmdb.open(str(path), map_size=1 << 30)
    meta = []
    with env.begin(write=True) as txn:
        for key in DiskStore(tree).keys():
            img = cv2.imread(str(tree / f"{key}.png"), cv2.IMREAD_UNCHANGED)
            txn.put(key.encode("ascii"), cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1])
            meta.append(f"{key}.png ({img.shape[0]},{img.shape[1]},{img.shape[2]}) 1\n")
    env.close()
    (path / "meta_info.txt").write_text("".join(meta))
    store = open_store(path)
    assert isinstance(store, LmdbStore)
    np.testing.assert_array_equal(store.read("001/00000003"), png_rgb(tree / "001" / "00000003.png"))


def test_lmdb_without_meta_info_lists_keys_from_the_database(lmdb_path, tmp_path):
    copy = tmp_path / "nometa.lmdb"
    copy.mkdir()
    (copy / "data.mdb").write_bytes((lmdb_path / "data.mdb").read_bytes())
    store = LmdbStore(copy)
    assert store.keys() == LmdbStore(lmdb_path).keys()
    assert store.shape("000/00000002") == (144, 176, 3)  # from the PNG header


# ---------------------------------------------------------------- errors name store, key and problem
def test_disk_store_missing_key(tree):
    with pytest.raises(StoreError, match=r"DiskStore\(.*frames\).*'000/00000099'.*does not exist"):
        DiskStore(tree).read("000/00000099")


def test_disk_store_missing_root(tmp_path):
    with pytest.raises(StoreError, match="folder does not exist"):
        DiskStore(tmp_path / "nope")


def test_disk_store_undecodable_file(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "f.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png body")
    with pytest.raises(StoreError, match=r"'c/f'.*not a decodable image"):
        DiskStore(tmp_path).read("c/f")
    with pytest.raises(StoreError, match="not a PNG"):
        (tmp_path / "c" / "g.png").write_bytes(b"GIF89a" + bytes(40))
        DiskStore(tmp_path).shape("c/g")


def test_disk_store_empty_file(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "f.png").write_bytes(b"")
    with pytest.raises(StoreError, match=r"'c/f'.*empty image data"):
        DiskStore(tmp_path).read("c/f")


def test_lmdb_deleted_after_opening(lmdb_path, tmp_path):
    copy = tmp_path / "gone.lmdb"
    copy.mkdir()
    (copy / "data.mdb").write_bytes((lmdb_path / "data.mdb").read_bytes())
    store = LmdbStore(copy)
    store.read("000/00000000")
    (copy / "data.mdb").unlink()
    with pytest.raises(StoreError, match=r"gone.lmdb.*data.mdb has disappeared"):
        store.read("000/00000001")


def test_lmdb_missing_key(lmdb_path):
    with pytest.raises(StoreError, match=r"LmdbStore\(.*frames.lmdb\).*'000/00000042' not found"):
        LmdbStore(lmdb_path).read("000/00000042")


def test_lmdb_non_ascii_key(lmdb_path):
    with pytest.raises(StoreError, match="not ASCII"):
        LmdbStore(lmdb_path).read("000/é")


def test_not_an_lmdb_folder(tree):
    with pytest.raises(StoreError, match="no data.mdb"):
        LmdbStore(tree)


def test_lmdb_undecodable_value(tmp_path):
    path = tmp_path / "bad.lmdb"
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"000/00000000", b"garbage bytes")
    env.close()
    with pytest.raises(StoreError, match=r"bad.lmdb.*'000/00000000'.*not a decodable image"):
        LmdbStore(path).read("000/00000000")


def test_lmdb_wrong_shape_against_meta_info(lmdb_path, tmp_path):
    copy = tmp_path / "shape.lmdb"
    copy.mkdir()
    (copy / "data.mdb").write_bytes((lmdb_path / "data.mdb").read_bytes())
    meta = (
        (lmdb_path / "meta_info.txt")
        .read_text()
        .replace("000/00000001.png (144,176,3)", "000/00000001.png (720,1280,3)")
    )
    (copy / "meta_info.txt").write_text(meta)
    with pytest.raises(StoreError, match=r"'000/00000001'.*decoded shape \(144, 176\).*\(720, 1280\)"):
        LmdbStore(copy).read("000/00000001")


def test_lmdb_malformed_meta_info(lmdb_path, tmp_path):
    copy = tmp_path / "meta.lmdb"
    copy.mkdir()
    (copy / "data.mdb").write_bytes((lmdb_path / "data.mdb").read_bytes())
    (copy / "meta_info.txt").write_text("000/00000000.png (144,176,3) 1\n000/00000001 144x176\n")
    with pytest.raises(StoreError, match=r"meta_info.txt:2: expected"):
        LmdbStore(copy)


def test_truncated_lmdb(lmdb_path, tmp_path):
    copy = tmp_path / "trunc.lmdb"
    copy.mkdir()
    (copy / "data.mdb").write_bytes((lmdb_path / "data.mdb").read_bytes()[:5000])
    store = LmdbStore(copy)
    with pytest.raises(StoreError, match=r"trunc.lmdb.*(corrupt|truncated)"):
        store.read("000/00000000")


def test_open_store_rejects_unknown_backend(tree):
    with pytest.raises(ValueError, match="'disk' or 'lmdb'"):
        open_store(tree, "hdf5")
    assert isinstance(open_store(tree), DiskStore)


# ---------------------------------------------------------------- processes
def test_lmdb_store_pickles_without_env_and_reads_in_dataloader_workers(lmdb_path, tree):
    store = LmdbStore(lmdb_path)
    store.read("000/00000000")  # opens the env in this process before the workers start
    assert pickle.loads(pickle.dumps(store)).read("000/00000001").shape == (144, 176, 3)

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.from_numpy(store.read(store.keys()[i]).copy())

    loader = torch.utils.data.DataLoader(Frames(), batch_size=2, num_workers=2)
    got = torch.cat(list(loader))
    want = torch.stack([torch.from_numpy(png_rgb(tree / f"{k}.png")) for k in store.keys()])
    assert torch.equal(got, want)


# ---------------------------------------------------------------- create_lmdb behaviour
def test_create_lmdb_refuses_to_overwrite(tree, tmp_path):
    out = tmp_path / "x.lmdb"
    create_lmdb_main([str(tree / "000"), str(out), "--workers", "0"])
    store = LmdbStore(out)
    assert store.keys() == [f"{i:08d}" for i in range(4)] and store.read("00000000").shape == (144, 176, 3)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite to replace it"):
        create_lmdb_main([str(tree), str(out)])
    create_lmdb_main([str(tree), str(out), "--overwrite", "--workers", "0"])
    rebuilt = LmdbStore(out)
    assert len(rebuilt.keys()) == 8
    np.testing.assert_array_equal(rebuilt.read("001/00000000"), png_rgb(tree / "001" / "00000000.png"))


def test_create_lmdb_failure_leaves_no_complete_looking_lmdb(tree, tmp_path):
    items = collect_tree(tree)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    items.append(type(items[0])("001/zzz", str(broken)))
    with pytest.raises(ValueError, match=r"broken.png.*'001/zzz'.*not a decodable image"):
        create_lmdb(items, tmp_path / "out.lmdb", workers=0, batch_size=3, progress=False)
    assert not (tmp_path / "out.lmdb").exists()


def test_create_lmdb_grows_a_full_map(tree, tmp_path):
    out = create_lmdb(
        collect_tree(tree),
        tmp_path / "small.lmdb",
        workers=0,
        batch_size=4,
        map_size=64 * 1024,
        progress=False,
    )
    assert len(parse_meta_info(out / "meta_info.txt")) == 8
    np.testing.assert_array_equal(LmdbStore(out).read("001/00000003"), png_rgb(tree / "001" / "00000003.png"))


def test_create_lmdb_memory_is_bounded_by_the_batch(tmp_path):
    """48 real 640x272 frames, batches of 4: peak traced memory stays far below the data size."""
    frames = real_frames("bikes.mp4", 100, 12)
    root = write_clip_tree(tmp_path / "big", {f"{c:03d}": frames for c in range(4)})
    items = collect_tree(root)
    decoded = frames[0].nbytes
    total = sum(Path(i.path).stat().st_size for i in items) + decoded * len(items)
    tracemalloc.start()
    create_lmdb(items, tmp_path / "big.lmdb", workers=0, batch_size=4, compress_level=1, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(LmdbStore(tmp_path / "big.lmdb").keys()) == 48
    assert peak < 12 * decoded, (peak, decoded)  # two batches of encoded + a few decoded frames
    assert peak < total / 4, (peak, total)


def test_collect_septuplets(tmp_path):
    (tmp_path / "list.txt").write_text("00001/0001\n00001/0002\n")
    items = collect_septuplets(tmp_path / "seq", tmp_path / "list.txt", center_only=True)
    assert [i.key for i in items] == ["00001/0001/im4", "00001/0002/im4"]
    items = collect_septuplets(tmp_path / "seq", tmp_path / "list.txt", center_only=False)
    assert [i.key for i in items[:7]] == [f"00001/0001/im{j}" for j in range(1, 8)]
