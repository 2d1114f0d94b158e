"""The queue of distributed mode against real Redis: what a message holds, where it goes, and what
happens when the broker is down (the job is kept; the reaper sends it later)."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
import redis

from app.services import finetune_jobs, generations, reports
from app.services.queues import REAP_TASK, queue_of
from app.settings import Settings
from tests.conftest import TEST_PEPPER
from worker.celery_app import CeleryQueue, create_celery

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
def broker() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


def celery_for(url: str, tmp_path):
    return create_celery(Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, broker_url=url,
                                  broker_timeout_s=0.5))


class TestRouting:
    @pytest.mark.parametrize("task_name, queue", [
        (finetune_jobs.TASK_NAME, "train"), (generations.TASK_NAME, "generate"), (reports.TASK_NAME, "default"),
        (REAP_TASK, "default"),
    ])
    def test_each_task_has_its_queue(self, task_name, queue):
        assert queue_of(task_name) == queue

    def test_an_unknown_task_is_an_error(self):
        with pytest.raises(ValueError, match="unknown task 'nope'"):
            queue_of("nope")

    def test_the_app_is_configured_for_at_least_once_delivery(self, tmp_path):
        conf = celery_for(REDIS_URL, tmp_path).conf
        assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (True, True, 1)
        assert conf.task_serializer == "json" and conf.accept_content == ["json"]
        assert conf.task_soft_time_limit < conf.task_time_limit
        assert conf.broker_transport_options["visibility_timeout"] == 3600


class TestCeleryQueue:
    def test_a_message_carries_the_task_name_and_the_id_as_json_on_its_queue(self, broker, tmp_path):
        CeleryQueue(celery_for(REDIS_URL, tmp_path)).enqueue(generations.TASK_NAME, "gen_123")
        assert broker.llen("train") == 0
        [raw] = broker.lrange("generate", 0, -1)
        message = json.loads(raw)
        assert message["content-type"] == "application/json"
        assert (message["headers"]["task"], message["headers"]["id"]) == ("generation.run", "gen_123")
        assert json.loads(base64.b64decode(message["body"]))[0] == ["gen_123"]

    def test_a_broker_that_is_down_loses_no_request(self, tmp_path, caplog):
        queue = CeleryQueue(celery_for("redis://127.0.0.1:1/0", tmp_path))
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="worker.celery_app"):
            queue.enqueue(finetune_jobs.TASK_NAME, "ftjob_1")  # logged, not raised
        assert time.monotonic() - started < 30
        assert "could not send finetune.run(ftjob_1)" in caplog.text and "reaper" in caplog.text
