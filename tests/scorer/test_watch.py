import asyncio

from services.scorer.registry import ScorerRegistry
from services.scorer.watch import watch_scorers
from tests.scorer.plugin_text import plugin


async def _next(events: asyncio.Queue, timeout: float = 10.0):
    return await asyncio.wait_for(events.get(), timeout)


async def test_watch_reloads_on_change_and_keeps_last_good_on_broken_edit(tmp_path):
    file = tmp_path / "demo.py"
    file.write_text(plugin(version="1.0.0"))
    registry = ScorerRegistry()
    registry.load_path(file)
    events: asyncio.Queue = asyncio.Queue()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        watch_scorers(registry, [file], events.put_nowait, stop=stop, ready=ready, debounce_ms=50)
    )
    await ready.wait()
    await asyncio.sleep(0.3)  # let the watcher arm itself
    try:
        file.write_text(plugin(version="2.0.0"))
        event = await _next(events)
        assert (event.change, event.scorers) == ("loaded", ("demo",))
        assert registry.get("demo").info.version == "2.0.0"

        file.write_text(plugin(version="3.0.0") + "\nthis is not python\n")
        event = await _next(events)
        assert event.change == "failed"
        assert event.error is not None and event.error.code.value == "SCORER_LOAD_ERROR"
        assert registry.get("demo").info.version == "2.0.0"

        # an editor that saves by writing a temp file and renaming it over the original
        tmp = tmp_path / ".demo.py.swp"
        tmp.write_text(plugin(version="4.0.0"))
        tmp.replace(file)
        event = await _next(events)
        assert event.change == "loaded"
        assert registry.get("demo").info.version == "4.0.0"

        new = tmp_path / "unrelated.py"
        new.write_text(plugin(name="ignored"))  # not a watched file: no event, not loaded
        file.unlink()
        event = await _next(events)
        assert (event.change, event.scorers) == ("removed", ("demo",))
        assert registry.names() == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_watching_a_folder_picks_up_new_files(tmp_path):
    registry = ScorerRegistry()
    events: asyncio.Queue = asyncio.Queue()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        watch_scorers(
            registry, [tmp_path], events.put_nowait, stop=stop, ready=ready, debounce_ms=50
        )
    )
    await ready.wait()
    await asyncio.sleep(0.3)
    try:
        (tmp_path / "fresh.py").write_text(plugin(name="fresh"))
        event = await _next(events)
        assert event.scorers == ("fresh",)
        assert registry.names() == ["fresh"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
