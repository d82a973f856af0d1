"""The engine cache on disk (issue 21): built once per geometry, loaded by the next process, never a bad entry.

Small frames (the 67x32 test detector, built in-process in ~0.1 s) so every case is quick; a load is
proved to build nothing by making pyFAI's build raise, and its results are checked against pyFAI's
``integrate1d`` (the reference, not our code).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os

import h5py
import numpy as np
import pyFAI
import pyFAI.detectors
import pytest

from pipeline_core.cli import main
from pipeline_core.config import config_from_dict
from pipeline_core.errors import ConfigError
from pipeline_core.processing import engine_store
from pipeline_core.processing import integrate as integrate_module
from pipeline_core.processing.engine_store import (
    ENV_VAR,
    MAGIC,
    SHARED_ENV_VAR,
    SUFFIX,
    EngineStore,
    default_store,
    engine_key,
)
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings, poni_digest

from .helpers import SMALL_FRAME, SMALL_PONI, write_small_acquisition

BINS = 40
DETECTORS = {"d": {"integration": {"poni": "x.poni"}}}


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 5000, SMALL_FRAME).astype(np.int32)


def _builds(monkeypatch) -> list[int]:
    """Counts pyFAI builds from now on."""
    count: list[int] = []
    real = integrate_module.build_pyfai_engine

    def counting(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(integrate_module, "build_pyfai_engine", counting)
    return count


def _entries(folder) -> list:
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX)) if folder.exists() else []


def _key(engine: IntegrationEngine) -> dict:
    s = engine.settings
    return engine_key(s.to_dict(), poni_digest(s.poni_path), engine.mask, engine.frame_shape)


def _reference(poni, frame, bins=BINS, error_model=None):
    return pyFAI.load(str(poni)).integrate1d(frame, bins, unit="2th_deg", method=("bbox", "csr", "cython"),
                                             mask=np.zeros(SMALL_FRAME, bool), polarization_factor=0.99,
                                             correctSolidAngle=True, error_model=error_model)


@pytest.mark.parametrize("engine_name", ["csr", "pyfai"])
def test_the_second_engine_loads_from_disk_and_integrates_alike(small_poni, frame, tmp_path, monkeypatch, engine_name):
    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS, error_model="poisson")
    # pyfai applies the cached coefficients through pyFAI's own integrate_ng; it stores only what a child builds
    isolate = True if engine_name == "pyfai" else None
    first = IntegrationEngine(settings, SMALL_FRAME, engine=engine_name, engine_store=store, isolate_build=isolate)
    assert not first.from_store and len(_entries(store.folder)) == 1
    monkeypatch.setattr(integrate_module, "build_pyfai_engine", _raise)
    monkeypatch.setattr(integrate_module, "build_in_child", _raise)
    monkeypatch.setattr(integrate_module, "read_poni", _raise)
    second = IntegrationEngine(settings, SMALL_FRAME, engine=engine_name, engine_store=store, isolate_build=isolate)
    assert second.from_store and second.used.name == engine_name
    a, b = first.integrate(frame, 1), second.integrate(frame, 1)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    np.testing.assert_array_equal(first.radial, second.radial)
    ref = _reference(small_poni, frame, error_model="poisson")
    tol = 1e-5 * float(np.abs(ref.intensity).max())
    np.testing.assert_allclose(b.intensity, ref.intensity, rtol=0, atol=tol)
    np.testing.assert_allclose(b.sigma, ref.sigma, rtol=0, atol=1e-5 * float(ref.sigma.max()))
    np.testing.assert_allclose(second.radial, ref.radial, rtol=1e-12)


def _raise(*args, **kwargs):
    raise AssertionError("pyFAI built an engine although the cache holds it")


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("damage", [_flip_last_byte, _truncate], ids=["bit flip", "truncated"])
def test_a_damaged_entry_is_rebuilt_and_replaced(small_poni, frame, tmp_path, monkeypatch, damage):
    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS)
    good = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    (entry,) = _entries(store.folder)
    damage(entry)
    assert "checksum" in store.load(_key(good)).reason or "truncated" in store.load(_key(good)).reason
    builds = _builds(monkeypatch)
    again = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    assert not again.from_store and len(builds) == 1  # built, not read from the bad file
    np.testing.assert_array_equal(again.integrate(frame).intensity, good.integrate(frame).intensity)
    assert _entries(store.folder) == [entry] and store.load(_key(good)).built is not None  # replaced
    ref = _reference(small_poni, frame)
    np.testing.assert_allclose(again.integrate(frame).intensity, ref.intensity, rtol=0,
                               atol=1e-5 * float(ref.intensity.max()))


def test_an_entry_of_another_key_is_never_used(small_poni, frame, tmp_path, monkeypatch):
    """An entry copied under another key's name (or a digest collision): its stored key says so."""
    store = EngineStore(tmp_path / "engines")
    forty = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS), SMALL_FRAME, engine_store=store)
    (entry,) = _entries(store.folder)
    fifty_settings = IntegrationSettings(small_poni, bins=50)
    fifty_key = engine_key(fifty_settings.to_dict(), poni_digest(small_poni), forty.mask, SMALL_FRAME)
    store.path_for(fifty_key).write_bytes(entry.read_bytes())
    assert store.load(fifty_key).reason == "its stored key is not the one asked for"
    builds = _builds(monkeypatch)
    fifty = IntegrationEngine(fifty_settings, SMALL_FRAME, engine_store=store)
    assert not fifty.from_store and len(builds) == 1
    assert fifty.integrate(frame).intensity.shape == (50,)
    assert store.load(fifty_key).built is not None  # the wrong file was replaced by the right one


def test_a_changed_mask_or_poni_value_is_another_entry(small_poni, tmp_path, monkeypatch):
    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS)
    IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    masked = np.zeros(SMALL_FRAME, bool)
    masked[0, 0] = True
    builds = _builds(monkeypatch)
    assert not IntegrationEngine(settings, SMALL_FRAME, masked, engine_store=store).from_store
    small_poni.write_text(small_poni.read_text().replace("Distance: 0.01", "Distance: 0.0100001"))
    assert not IntegrationEngine(settings, SMALL_FRAME, engine_store=store).from_store
    # the same values written again with another comment: the same engine
    small_poni.write_text("# written again\n" + small_poni.read_text())
    assert IntegrationEngine(settings, SMALL_FRAME, engine_store=store).from_store
    assert len(builds) == 2 and len(_entries(store.folder)) == 3


def _write_many(folder: str, poni: str, times: int) -> None:
    engine = IntegrationEngine(IntegrationSettings(poni, bins=BINS), SMALL_FRAME, engine_store=None)
    store = EngineStore(folder)
    built = integrate_module.built_in_process(engine.ai, engine.settings, SMALL_FRAME, engine.ai.integrate1d(
        np.zeros(SMALL_FRAME, np.float32), BINS, **integrate_module.integrate1d_kwargs(engine.settings, engine.mask)))
    for _ in range(times):
        assert store.save(_key(engine), built) is not None


def test_two_processes_writing_the_same_entry_leave_one_valid_file(small_poni, tmp_path, frame):
    folder = tmp_path / "engines"
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_many, args=(str(folder), str(small_poni), 25)) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert [p.name for p in folder.iterdir()] == [_entries(folder)[0].name]  # no temporary file left
    loaded = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS), SMALL_FRAME,
                               engine_store=EngineStore(folder))
    assert loaded.from_store
    ref = _reference(small_poni, frame)
    np.testing.assert_allclose(loaded.integrate(frame).intensity, ref.intensity, rtol=0,
                               atol=1e-5 * float(ref.intensity.max()))


def test_the_size_bound_drops_the_least_recently_used(small_poni, tmp_path):
    store = EngineStore(tmp_path / "engines")
    engines = {}
    for bins in (40, 41):
        engines[bins] = IntegrationEngine(IntegrationSettings(small_poni, bins=bins), SMALL_FRAME, engine_store=store)
    size = max(p.stat().st_size for p in _entries(store.folder))
    for i, path in enumerate(_entries(store.folder)):  # distinct ages, whatever the clock's resolution
        os.utime(path, (1000 + i, 1000 + i))
    store.max_bytes = int(2.5 * size)
    assert store.load(_key(engines[40])).built is not None and store.load(_key(engines[41])).built is not None
    os.utime(store.path_for(_key(engines[41])), (10, 10))  # 41 is now the least recently used
    IntegrationEngine(IntegrationSettings(small_poni, bins=42), SMALL_FRAME, engine_store=store)
    e42 = IntegrationEngine(IntegrationSettings(small_poni, bins=42), SMALL_FRAME, engine_store=store)
    assert e42.from_store
    assert store.load(_key(engines[41])).reason == "missing"
    assert store.load(_key(engines[40])).built is not None
    assert len(_entries(store.folder)) == 2


def test_a_dead_writers_temporary_file_is_removed(tmp_path):
    store = EngineStore(tmp_path)
    stale, fresh = tmp_path / "abc.123.tmp", tmp_path / "abc.456.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (1, 1))
    assert store.evict() == [stale] and fresh.exists()


def test_the_default_folder_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_store().folder == tmp_path / "xdg" / "xrd-pipeline" / "engines"
    monkeypatch.setenv(ENV_VAR, "off")
    assert default_store() is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert default_store().folder == tmp_path / "mine"


def _integrate(tmp_path, small_poni, *options) -> int:
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    return main(["integrate", str(acq["files"][0]), "--poni", str(small_poni), "-o", str(tmp_path / "out.nxs"),
                 "--bins", "33", *options])


def test_no_engine_cache_writes_nothing(tmp_path, small_poni, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env-engines"))
    assert _integrate(tmp_path, small_poni, "--no-engine-cache", "--engine-cache", str(tmp_path / "x")) == 0
    assert not (tmp_path / "env-engines").exists() and not (tmp_path / "x").exists()
    with h5py.File(tmp_path / "out.nxs") as h5:
        assert h5["processed/process/engine"][()].decode() == "csr"


def test_engine_cache_dir_is_where_the_cli_keeps_and_finds_its_engine(tmp_path, small_poni, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env-engines"))
    folder = tmp_path / "chosen"
    assert _integrate(tmp_path, small_poni, "--engine-cache", str(folder)) == 0
    assert len(_entries(folder)) == 1 and not (tmp_path / "env-engines").exists()
    with h5py.File(tmp_path / "out.nxs") as h5:
        first = h5["processed/result/data"][()]
    monkeypatch.setattr(integrate_module, "build_pyfai_engine", _raise)
    (tmp_path / "out.nxs").unlink()
    assert _integrate(tmp_path, small_poni, "--engine-cache", str(folder)) == 0  # loaded: no build possible
    with h5py.File(tmp_path / "out.nxs") as h5:
        again = h5["processed/result/data"][()]
    assert first.shape == (3, 33) and first.max() > 0
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(("value", "folder", "enabled"), [
    (None, None, True), (False, None, False), ("off", None, False), ("engines", "engines", True),
])  # fmt: skip
def test_the_config_key(tmp_path, value, folder, enabled):
    data = {"data_root": str(tmp_path), "output_directory": str(tmp_path), "detectors": DETECTORS}
    if value is not None:
        data["engine_cache"] = value
    cfg = config_from_dict(data, base_dir=tmp_path, check_files=False)
    assert cfg.engine_cache == (None if folder is None else tmp_path / folder)
    assert cfg.engine_cache_enabled is enabled


def test_a_bad_config_value_is_named(tmp_path):
    data = {"data_root": str(tmp_path), "output_directory": str(tmp_path), "detectors": DETECTORS, "engine_cache": 3}
    with pytest.raises(ConfigError, match="engine_cache: 3 is .*expected a folder path"):
        config_from_dict(data, base_dir=tmp_path, check_files=False)


# -- review defects: a damaged header, files the PONI names, entries others could write ------------------
def _rewrite_header(entry, change) -> None:
    """Rewrite an entry's JSON header line with ``change(header)``, its payload kept as it was."""
    raw = entry.read_bytes()
    line, payload = raw[len(MAGIC):].split(b"\n", 1)
    header = json.loads(line)
    change(header)
    entry.write_bytes(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)


def _announce_shape(shape):
    def change(header):
        header["arrays"][0][2] = shape
    return change


def _announce_dtype(dtype):
    def change(header):
        header["arrays"][0][1] = dtype
    return change


@pytest.mark.parametrize("change", [
    _announce_shape([10**14]),  # 400 TB: np.empty raised MemoryError, which no caller caught
    _announce_shape([10**10, 10**10]),  # more elements than an int64 counts
    _announce_shape([-5]),
    _announce_shape([2.5]),
    _announce_dtype("|O"),  # object pointers read from a file
], ids=["400 TB", "overflow", "negative", "fractional", "object dtype"])  # fmt: skip
def test_a_header_announcing_impossible_arrays_is_rebuilt_without_allocating(small_poni, frame, tmp_path,
                                                                            monkeypatch, change):
    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS)
    good = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    (entry,) = _entries(store.folder)
    _rewrite_header(entry, change)
    reason = store.load(_key(good)).reason
    assert "array data" in reason and "expected" in reason, reason
    builds = _builds(monkeypatch)
    again = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    assert not again.from_store and len(builds) == 1
    assert store.load(_key(good)).built is not None  # the damaged entry was replaced
    ref = _reference(small_poni, frame)
    np.testing.assert_allclose(again.integrate(frame).intensity, ref.intensity, rtol=0,
                               atol=1e-5 * float(ref.intensity.max()))


def test_an_unexpected_error_while_reading_an_entry_is_a_miss(small_poni, tmp_path, monkeypatch):
    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS)
    good = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)

    def broken(fh, key):
        raise RuntimeError("a reader bug")

    monkeypatch.setattr(engine_store, "_read_entry", broken)
    assert store.load(_key(good)) == engine_store.LoadResult(None, "a reader bug")
    assert not IntegrationEngine(settings, SMALL_FRAME, engine_store=store).from_store


def _nexus_poni(tmp_path, pixel: float):
    """A PONI whose detector is the file ``det.h5`` (pixel size ``pixel``), written by pyFAI itself."""
    det_file = tmp_path / "det.h5"
    det_file.unlink(missing_ok=True)
    pyFAI.detectors.Detector(pixel1=pixel, pixel2=pixel, max_shape=SMALL_FRAME).save(str(det_file))
    poni = tmp_path / "nexus.poni"
    poni.write_text(SMALL_PONI.replace("Detector: Detector", "Detector: NexusDetector").replace(
        '{"pixel1": 5.5e-05, "pixel2": 5.5e-05, "max_shape": null}', json.dumps({"filename": str(det_file)})))
    return poni


def test_a_detector_file_rewritten_in_place_is_another_engine(tmp_path, frame):
    """The PONI names det.h5; det.h5 recalibrated from 55 to 75 um pixels: the old engine (radial max
    11.65 deg) must not be loaded for the new one (19.33 deg, pyFAI's own answer)."""
    store = EngineStore(tmp_path / "engines")
    poni = _nexus_poni(tmp_path, 5.5e-5)
    settings = IntegrationSettings(poni, bins=BINS)
    first = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    _nexus_poni(tmp_path, 7.5e-5)
    second = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    assert not second.from_store
    ref = _reference(poni, frame)
    np.testing.assert_allclose(second.radial, ref.radial, rtol=1e-12)
    assert ref.radial.max() > 1.5 * first.radial.max()  # the two detectors do differ
    assert IntegrationEngine(settings, SMALL_FRAME, engine_store=store).from_store  # unchanged file: loaded


@pytest.mark.parametrize("line", [
    'Detector_config: {"pixel1": 5.5e-05, "pixel2": 5.5e-05, "splineFile": "%s"}',
    'SplineFile: %s',  # PONI version 1
    'Detector: %s',  # pyFAI reads a detector name that is a file as a NexusDetector
])  # fmt: skip
def test_every_file_the_poni_names_is_in_its_digest(tmp_path, line):
    referenced = tmp_path / "detector.file"
    referenced.write_bytes(b"first calibration")
    poni = tmp_path / "x.poni"
    poni.write_text("Distance: 0.1\nPoni1: 0.01\nPoni2: 0.01\nWavelength: 1e-10\n" + line % referenced + "\n")
    before = poni_digest(poni)
    referenced.write_bytes(b"second calibration")
    assert poni_digest(poni) != before
    referenced.write_bytes(b"first calibration")
    assert poni_digest(poni) == before


def test_a_poni_naming_no_file_keeps_its_digest(small_poni):
    """Merged files carry fingerprints built from this digest: it must not change for ordinary PONIs."""
    assert poni_digest(small_poni) == "e2cf10c6fe637324b197d5c985136f19285d1e257380a07fd71bbf48d1b8f9e6"


@pytest.fixture
def stored(small_poni, tmp_path):
    """A store holding one engine, its settings and the entry's path."""
    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS)
    engine = IntegrationEngine(settings, SMALL_FRAME, engine_store=store)
    (entry,) = _entries(store.folder)
    return store, settings, engine, entry


def _refused(store, settings, engine, caplog, named, why) -> None:
    """The entry is not used: a warning names ``named`` and ``why``, and the engine is built."""
    caplog.clear()
    with caplog.at_level("WARNING", logger=engine_store.__name__):
        assert store.load(_key(engine)).built is None
    assert any(str(named) in r.getMessage() and why in r.getMessage() for r in caplog.records), caplog.text
    assert not IntegrationEngine(settings, SMALL_FRAME, engine_store=store).from_store


def test_a_folder_writable_by_others_is_refused_unless_marked_shared(stored, caplog):
    store, settings, engine, entry = stored
    store.folder.chmod(0o777)
    _refused(store, settings, engine, caplog, store.folder, "writable by group or others (mode 0o777)")
    shared = EngineStore(store.folder, shared=True)
    assert IntegrationEngine(settings, SMALL_FRAME, engine_store=shared).from_store


def test_an_entry_writable_by_others_is_refused(stored, caplog):
    store, settings, engine, entry = stored
    entry.chmod(0o666)
    _refused(store, settings, engine, caplog, entry, "writable by group or others (mode 0o666)")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root (os.chown)")
@pytest.mark.parametrize("what", ["entry", "folder"])
def test_a_self_consistent_entry_of_another_user_is_refused(stored, caplog, frame, what):
    """The review's attack: someone else rewrites the entry with a 1 % radial error and a fresh checksum."""
    store, settings, engine, entry = stored
    with open(entry, "rb") as fh:
        good = engine_store._read_entry(fh, _key(engine))
    with open(entry, "wb") as fh:
        engine_store._write_entry(fh, _key(engine), dataclasses.replace(good, radial=good.radial * 1.01))
    owned = entry if what == "entry" else store.folder
    os.chown(owned, 4321, 4321)
    _refused(store, settings, engine, caplog, owned, "owned by uid 4321")
    np.testing.assert_allclose(IntegrationEngine(settings, SMALL_FRAME, engine_store=store).radial,
                               _reference(settings.poni_path, frame).radial, rtol=1e-12)


def test_engine_cache_shared_in_the_config_and_on_the_command_line(tmp_path, small_poni, monkeypatch, capsys):
    data = {"data_root": str(tmp_path), "output_directory": str(tmp_path), "detectors": DETECTORS,
            "engine_cache": "engines", "engine_cache_shared": True}
    assert config_from_dict(data, base_dir=tmp_path, check_files=False).engine_cache_shared is True
    with pytest.raises(ConfigError, match="engine_cache_shared: 'yes' is .*expected true or false"):
        config_from_dict({**data, "engine_cache_shared": "yes"}, base_dir=tmp_path, check_files=False)
    with pytest.raises(ConfigError, match="engine_cache_shared: .*needs an engine_cache folder"):
        config_from_dict({**data, "engine_cache": "off"}, base_dir=tmp_path, check_files=False)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env-engines"))
    monkeypatch.setenv(SHARED_ENV_VAR, "0")
    folder = tmp_path / "team"
    assert _integrate(tmp_path, small_poni, "--engine-cache", str(folder), "--engine-cache-shared") == 0
    folder.chmod(0o775)  # the team's group writes here
    monkeypatch.setattr(integrate_module, "build_pyfai_engine", _raise)
    (tmp_path / "out.nxs").unlink()
    assert _integrate(tmp_path, small_poni, "--engine-cache", str(folder), "--engine-cache-shared") == 0  # loaded
    assert default_store().shared is True  # job tasks and builder children inherit the choice


def test_a_device_s_engine_cache_setting_names_the_store_and_refuses_a_relative_folder(tmp_path, monkeypatch):
    """The Integrator's ``EngineCache`` property: empty = the process's store, ``off`` = none, else that
    folder; a relative folder (it would follow the directory Starter starts the server in) is refused."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert engine_store.store_for("").folder == tmp_path / "from-env"
    assert engine_store.store_for("", shared=True).shared
    assert engine_store.store_for("OFF") is None and engine_store.store_for(" off ") is None
    own = engine_store.store_for(str(tmp_path / "own"), shared=True)
    assert own.folder == tmp_path / "own" and own.shared
    with pytest.raises(ConfigError, match=r"engine cache folder 'engines/here' is not an absolute path; expected"):
        engine_store.store_for("engines/here")


def test_the_warm_engine_cache_says_whether_it_loaded_or_built_and_from_where(small_poni, tmp_path):
    """What an Integrator's ``engineSource`` shows: a restarted one (a new cache, the same store) loads."""
    from pipeline_core.processing.engine_cache import EngineCache

    store = EngineStore(tmp_path / "engines")
    settings = IntegrationSettings(small_poni, bins=BINS)
    first = EngineCache("i1", engine="csr", store=store)
    assert first.last_source == "no engine yet"
    first.engine_for(settings, None, SMALL_FRAME, None)
    assert first.last_source.startswith(f"csr engine for {small_poni}: built in ")
    assert first.last_source.endswith(f" s (engine cache {store.folder})")
    restarted = EngineCache("i1", engine="csr", store=store)
    restarted.engine_for(settings, None, SMALL_FRAME, None)
    loaded = f"csr engine for {small_poni}: loaded from the engine cache {store.folder} in "
    assert restarted.last_source.startswith(loaded)
    without = EngineCache("i1", engine="csr", store=None)
    without.engine_for(settings, None, SMALL_FRAME, None)
    assert without.last_source.endswith(" s (engine cache off)")
