"""System events as comfyui-api's receivers read them, and their names."""

from __future__ import annotations

from app.core.settings import SettingsError, load_settings
from app.core.system_events import comfy_event_data, event_name


def test_comfy_event_data_is_comfyuis_message_and_its_fields() -> None:
    data = comfy_event_data("executing", {"node": "3", "prompt_id": "comfy-id"}, "req-1")
    assert data["type"] == "executing"
    assert data["data"] == {"node": "3", "prompt_id": "req-1"}  # theirs: data.data.prompt_id
    assert data["prompt_id"] == "req-1" and data["node"] == "3"  # ours: data.prompt_id


def test_progress_state_nodes_carry_the_request_id() -> None:
    nodes = {"3": {"value": 1, "max": 2, "prompt_id": "comfy-id"}, "4": "odd"}
    data = comfy_event_data("progress_state", {"prompt_id": "comfy-id", "nodes": nodes}, "req-1")
    assert data["data"]["nodes"]["3"]["prompt_id"] == "req-1"
    assert data["data"]["nodes"]["4"] == "odd"


def test_an_event_of_no_job_keeps_what_comfyui_sent() -> None:
    data = comfy_event_data("status", {"status": {"exec_info": {"queue_remaining": 0}}}, None)
    assert data["data"] == {"status": {"exec_info": {"queue_remaining": 0}}}
    assert "prompt_id" not in data


def test_their_event_names() -> None:
    assert event_name("file_downloaded") == "storage.file_downloaded"
    assert event_name("model.downloaded") == "model.downloaded"
    chosen = load_settings(system_webhook_events="file_downloaded,file_uploaded,file_deleted")
    assert chosen.system_webhook_events == {"file_downloaded", "file_uploaded", "file_deleted"}
    assert "file_deleted" in load_settings(system_webhook_events="all").system_webhook_events
    try:
        load_settings(system_webhook_events="file_moved")
    except SettingsError as e:
        assert "file_moved" in str(e)
    else:
        raise AssertionError("an unknown event name must stop start-up")
