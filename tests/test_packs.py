"""Packs (wsss.packs): per-image files kept as a few zip parts. Round trips, the same parts from
any split of the writing work, and every fault named with its file."""
from __future__ import annotations

import pickle
import zipfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from wsss import artifacts, io, packs
from wsss.data import files
from wsss.errors import ArtifactError


def _members(n: int) -> dict[str, bytes]:
    rng = np.random.default_rng(n)
    return {f"img_{i:03d}.bin": rng.bytes(int(rng.integers(0, 300))) for i in range(n)}


def _write(root, members: dict[str, bytes], per_part: int, parts=None, index=True, order=None):
    """The pack of ``members``; only the members of ``parts`` (all by default), fed in ``order``."""
    names = list(members)
    chunks = packs.parts_of(names, per_part)
    wanted = set(names) if parts is None else {n for k in parts for n in chunks[k]}
    writer = packs.PackWriter(root, names, per_part, parts=parts, index=index)
    for name in order or names:
        if name in wanted:
            writer.add(name, members[name])
    writer.close()


def test_round_trip_order_and_parts(tmp_path):
    members = _members(37)
    _write(tmp_path / "p", members, per_part=10)
    pack = packs.Pack(tmp_path / "p")
    assert list(pack.members) == list(members) and len(pack) == 37
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == [
        "index.json", "part-00000.zip", "part-00001.zip", "part-00002.zip", "part-00003.zip"]
    assert all(pack.read(n) == b for n, b in members.items())
    # a part is a plain zip of the member files, stored as they are
    with zipfile.ZipFile(tmp_path / "p" / "part-00003.zip") as z:
        assert z.namelist() == list(members)[30:]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert z.read("img_036.bin") == members["img_036.bin"]


def test_any_split_of_the_work_and_any_order_gives_the_same_bytes(tmp_path):
    """Two processes each writing every other part (members in any order), the index written
    after: byte for byte the one-writer pack. Writing again gives the same bytes (no times)."""
    members = _members(25)
    _write(tmp_path / "one", members, per_part=4)
    n_parts = len(packs.parts_of(list(members), 4))
    for rank in (1, 0):
        mine = range(n_parts)[rank::2]
        _write(tmp_path / "two", members, per_part=4, parts=mine, index=False, order=list(members)[::-1])
    packs.write_index(tmp_path / "two", list(members), 4)
    _write(tmp_path / "again", members, per_part=4)
    for name in sorted(p.name for p in (tmp_path / "one").iterdir()):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_writer_faults(tmp_path):
    members = _members(5)
    writer = packs.PackWriter(tmp_path / "p", list(members), per_part=2)
    with pytest.raises(KeyError, match="not a member"):
        writer.add("other.bin", b"")
    writer.add("img_000.bin", b"x")
    with pytest.raises(ArtifactError, match="4 members never written"):
        writer.close()
    assert not (tmp_path / "p" / "index.json").exists()          # unfinished: no index
    with pytest.raises(ArtifactError, match="'a' is named twice"):
        packs.PackWriter(tmp_path / "q", ["b", "a", "a"])
    with pytest.raises(ValueError, match="cannot write the index"):
        packs.PackWriter(tmp_path / "q", ["a", "b"], parts=[0])
    with pytest.raises(ValueError, match="outside"):
        packs.PackWriter(tmp_path / "q", ["a", "b"], parts=iter([3]), index=False)


def test_a_run_stopped_over_an_old_pack_leaves_no_finished_pack(tmp_path):
    """Writing over a finished pack removes its index first: a run stopped after some parts is
    never read as a mix of new and old parts."""
    names = [f"{i}.png" for i in range(32)]
    _write(tmp_path / "p", {n: b"old" for n in names}, per_part=16)
    writer = packs.PackWriter(tmp_path / "p", names, per_part=16)
    for n in names[:16]:
        writer.add(n, b"new")                               # part 0 written, then the run stops
    with pytest.raises(ArtifactError, match="index.json: not found"):
        packs.Pack(tmp_path / "p")


def test_reader_faults_name_the_file(tmp_path):
    members = _members(6)
    with pytest.raises(ArtifactError, match=r"index.json: not found.*dvc repro"):
        packs.Pack(tmp_path / "p")
    _write(tmp_path / "p", members, per_part=3)
    pack = packs.Pack(tmp_path / "p")
    with pytest.raises(ArtifactError, match="no member 'nope.bin'"):
        pack.read("nope.bin")
    # a flipped byte inside a member: the zip's CRC catches it, naming part and member
    part = tmp_path / "p" / "part-00001.zip"
    data = bytearray(part.read_bytes())
    name = "img_004.bin"
    at = data.index(members[name]) if members[name] else None
    if at is not None:
        data[at] ^= 0xFF
        part.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match=r"part-00001.zip:img_004.bin: unreadable"):
            packs.Pack(tmp_path / "p").read(name)
    part.unlink()
    with pytest.raises(ArtifactError, match=r"part-00001.zip: part of .* not found"):
        packs.Pack(tmp_path / "p").read(name)
    (tmp_path / "p" / "part-00000.zip").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match=r"part-00000.zip: not a readable zip part"):
        packs.Pack(tmp_path / "p").read("img_000.bin")
    io.write_json(tmp_path / "p" / "index.json", {"format": 99})
    with pytest.raises(ArtifactError, match="not a pack index"):
        packs.Pack(tmp_path / "p")


def _read_in_worker(args):
    pack, name = args
    return pack.read(name)


def test_a_pack_read_in_worker_processes(tmp_path):
    """A pack (with parts open in the parent) pickles without its open files; workers read it."""
    members = _members(20)
    _write(tmp_path / "p", members, per_part=3)
    pack = packs.Pack(tmp_path / "p")
    pack.read("img_000.bin")
    assert pickle.loads(pickle.dumps(pack))._open == {}
    with ProcessPoolExecutor(2) as pool:
        got = list(pool.map(_read_in_worker, [(pack, n) for n in members]))
    assert got == list(members.values())


def test_replace_members_keeps_the_rest(tmp_path):
    members = _members(9)
    _write(tmp_path / "p", members, per_part=4)
    packs.replace_members(tmp_path / "p", {"img_005.bin": b"new"})
    pack = packs.Pack(tmp_path / "p")
    assert list(pack.members) == list(members)
    assert pack.read("img_005.bin") == b"new"
    assert all(pack.read(n) == b for n, b in members.items() if n != "img_005.bin")
    with pytest.raises(ArtifactError, match="no member 'x'"):
        packs.replace_members(tmp_path / "p", {"x": b""})


def test_a_smaller_pack_written_over_a_larger_leaves_no_stale_part(tmp_path):
    _write(tmp_path / "p", _members(9), per_part=2)
    _write(tmp_path / "p", _members(3), per_part=2)
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["index.json", "part-00000.zip", "part-00001.zip"]


def test_seed_maps_and_labels_read_from_members(tmp_path):
    """What the stages store: seed maps (.npz) and palette PNGs, read back through members with
    the same checks as files, an error naming part and member."""
    cam = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    label = np.array([[0, 3], [255, 3]], dtype=np.uint8)
    members = {artifacts.cam_name("a"): artifacts.cams_bytes([3, 15], {"cam": cam}),
               artifacts.label_name("a"): files.palette_png(label)}
    _write(tmp_path / "p", members, per_part=1)
    pack = packs.Pack(tmp_path / "p")
    got = artifacts.read_cams(pack, "a", expect_shape=(5, 7))
    assert np.abs(got["cam"] - cam).max() <= 1e-3 and got["keys"].tolist() == [3, 15]
    np.testing.assert_array_equal(files.read_mask(pack.member(artifacts.label_name("a"))), label)
    with pytest.raises(ArtifactError, match=r"part-00000.zip:a.npz: maps are \(5, 7\), image is \(7, 5\)"):
        artifacts.read_cams(pack, "a", expect_shape=(7, 5))
    with pytest.raises(ArtifactError, match=r"part-00001.zip:a.png: not a .npz archive"):
        artifacts.load_cams(pack.member(artifacts.label_name("a")))


def test_a_member_travels_as_folder_and_name(tmp_path):
    """A member sent to another process carries the pack's folder and its name, not the index
    (a pool's tasks stay small at COCO's size); it reads the same there."""
    members = _members(200)
    _write(tmp_path / "p", members, per_part=16)
    member = packs.Pack(tmp_path / "p").member("img_123.bin")
    assert member.exists() and not packs.Pack(tmp_path / "p").member("nope").exists()
    data = pickle.dumps(member)
    assert len(data) < 300 and b"img_000.bin" not in data
    assert pickle.loads(data).read_bytes() == members["img_123.bin"]
    with ProcessPoolExecutor(1) as pool:
        assert pool.submit(_read_member, member).result() == members["img_123.bin"]


def _read_member(member):
    return member.read_bytes()


def test_pack_files(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"m{i}.png")
        paths[-1].write_bytes(bytes([i]) * i)
    packs.pack_files(paths, tmp_path / "p", per_part=2)
    pack = packs.Pack(tmp_path / "p")
    assert list(pack.members) == [f"m{i}.png" for i in range(5)] and pack.read("m3.png") == b"\x03\x03\x03"
