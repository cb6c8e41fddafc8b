"""The core objects one web app works with, built once per app (never module globals).

Route handlers reach them through `web()`; tests build a fresh app on a temporary data
folder and get fresh objects.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flask import current_app

from appliance.accounts import LoginThrottle, Sessions, SetupCode, Users
from appliance.agenda import Agenda
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.query import ItemIndex
from appliance.status import StatusBoard
from appliance.web.hosts import allowed_hosts

EXTENSION = "acopio"


@dataclass
class WebContext:
    config: Config
    data: DataDir
    users: Users
    sessions: Sessions
    setup: SetupCode
    throttle: LoginThrottle
    index: ItemIndex
    agenda: Agenda
    status: StatusBoard
    # Slow actions a request starts but should not wait for (importing a stopped recording).
    background: ThreadPoolExecutor
    allowed_hosts: frozenset[str]

    @classmethod
    def build(cls, config: Config) -> WebContext:
        data = DataDir.at(config.data_dir)
        data.ensure()
        users = Users(data.state)
        index = ItemIndex(data, config.zone)
        return cls(
            config=config,
            data=data,
            users=users,
            sessions=Sessions(data.state, users,
                              idle_s=config.web.session_idle_hours * 3600,
                              max_s=config.web.session_max_hours * 3600),
            setup=SetupCode(data.state, users),
            throttle=LoginThrottle(config.web.login_attempts, config.web.login_window_s),
            index=index,
            agenda=Agenda(data.state, node=config.kit.name),
            status=StatusBoard(config, latest_import=index.latest_import),
            background=ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-background"),
            allowed_hosts=allowed_hosts(config.kit.name, config.web.allowed_hosts),
        )

    def close(self) -> None:
        self.background.shutdown(wait=True)
        self.index.close()


def web() -> WebContext:
    return current_app.extensions[EXTENSION]
