"""The database proxy itself: a cut refuses and breaks connections, then works again; a lost COMMIT reply leaves
the client with an error although the row landed."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.reliability.db_proxy import DbProxy


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_cut_breaks_and_refuses_connections_then_they_work_again(db_proxy: tuple[DbProxy, str]) -> None:
    proxy, url = db_proxy
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        proxy.cut(1.0)
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_dsn(url), connect_timeout=2)
    time.sleep(1.5)
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        assert connection.execute("SELECT 2").fetchone() == (2,)

    proxy.cut()  # until restored
    time.sleep(0.3)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_dsn(url), connect_timeout=2)
    proxy.restore()
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        assert connection.execute("SELECT 3").fetchone() == (3,)


def test_a_lost_commit_reply_is_an_error_for_the_client_but_the_row_is_there(db_proxy: tuple[DbProxy, str]) -> None:
    proxy, url = db_proxy
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        connection.execute("CREATE TABLE proxied (id integer PRIMARY KEY, note text)")

    # Marked: only the transaction that touches the marker loses its reply; another one commits normally.
    proxy.lose_next_commit(marker=b"lost-one")
    with psycopg.connect(_dsn(url)) as connection:
        connection.execute("INSERT INTO proxied VALUES (1, 'kept')")
        connection.commit()
        connection.execute("INSERT INTO proxied VALUES (2, 'lost-one')")
        with pytest.raises(psycopg.OperationalError):
            connection.commit()
    assert proxy.wait_commit_lost(5) and proxy.commits_lost == 1

    # A statement prepared before the loss was armed is recognised by the name its Bind messages carry.
    with psycopg.connect(_dsn(url)) as connection:
        connection.execute("INSERT INTO proxied VALUES (%s, 'prepared')", (10,), prepare=True)
        connection.commit()
        proxy.lose_next_commit(marker=b"'prepared'")
        connection.execute("INSERT INTO proxied VALUES (%s, 'prepared')", (11,), prepare=True)
        with pytest.raises(psycopg.OperationalError):
            connection.commit()
    assert proxy.commits_lost == 2

    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        rows = connection.execute("SELECT id, note FROM proxied ORDER BY id").fetchall()
        assert rows == [(1, "kept"), (2, "lost-one"), (10, "prepared"), (11, "prepared")]
        # Unarmed again: commits go through.
        with connection.transaction():
            connection.execute("INSERT INTO proxied VALUES (3, 'after')")
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM proxied").fetchone() == (5,)
