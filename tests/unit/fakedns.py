"""A resolver for the address policy that answers from a table: DNS in tests, without a server."""

from __future__ import annotations

import socket


class FakeDNS:
    """Answers from a table; a name given several answers returns the next one on each lookup."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]
