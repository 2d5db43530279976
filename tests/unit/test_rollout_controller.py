"""The rollout controller keeps checking every endpoint when one of them cannot be read (a rehearsal of CI once saw
no automatic rollback and no line saying why: one failing status ended the whole pass, silently)."""

from __future__ import annotations

import logging

from mlplatform.serving.errors import BackendUnavailable

from mlplatform_service.rollout_backends import _statuses


def test_an_endpoint_whose_status_fails_is_logged_and_the_others_are_checked(caplog):
    def status(team: str, name: str) -> dict:
        if name == "broken":
            raise BackendUnavailable("the Ray head's dashboard did not answer")
        return {"name": name, "rollout": {"model_version": "2"}}

    with caplog.at_level(logging.ERROR, logger="mlplatform_service.rollout_backends"):
        found = _statuses(status, [("team-vision", "iris"), ("team-vision", "broken"), ("team-nlp", "rose")])
    assert found == [("team-vision", "iris", {"name": "iris", "rollout": {"model_version": "2"}}),
                     ("team-nlp", "rose", {"name": "rose", "rollout": {"model_version": "2"}})]
    [record] = caplog.records
    assert record.getMessage() == ("the status of team-vision/broken, in rollout, could not be read; its rollout is "
                                   "checked at the next pass")
    assert "the Ray head's dashboard did not answer" in caplog.text
