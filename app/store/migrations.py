"""The schema's versions: what each engine runs to reach each one, and what once had to be
worked out of the data to get there.

Both engines number their versions alike: version *n* is the same schema on either, and where
an engine needs nothing for a number its script is empty. (PostgreSQL numbered its own until
then: see :data:`POSTGRES_OWN_NUMBERS`.)
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .. import lifecycle
from ..lifecycle import Status
from ..provider import MalformedWebhookError, parse_webhook


class Migration(NamedTuple):
    """What each engine runs to bring the schema from the version before to this one."""

    sqlite: str
    postgres: str


# Each entry upgrades the schema by one version; never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
    # 1. The webhooks as they came, and each session's state.
    Migration(
        sqlite="""
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX webhooks_by_session ON webhooks (session_id, id);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        reason TEXT,
        interaction TEXT,
        action_received_at REAL,
        action_expires_at REAL,
        returned_at REAL,
        payments TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX sessions_by_action_expiry ON sessions (action_expires_at)
        WHERE status = 'action_required';
    """,
        postgres="""
    CREATE TABLE webhooks (
        id BIGSERIAL PRIMARY KEY,
        digest BYTEA NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE INDEX webhooks_by_session ON webhooks (session_id, id);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        reason TEXT,
        interaction TEXT,
        action_received_at DOUBLE PRECISION,
        action_expires_at DOUBLE PRECISION,
        returned_at DOUBLE PRECISION,
        payments TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX sessions_by_action_expiry ON sessions (action_expires_at)
        WHERE status = 'action_required';
    """,
    ),
    # 2. The webhooks by age, for retention.
    Migration(
        sqlite="""
    CREATE INDEX webhooks_by_received_at ON webhooks (received_at);
    """,
        postgres="""
    CREATE INDEX webhooks_by_received_at ON webhooks (received_at);
    """,
    ),
    # 3. Changes announced to other processes sharing this file (see SQLiteStore._follow).
    # PostgreSQL announces them with NOTIFY (see PostgresStore._listen): nothing to do.
    Migration(
        sqlite="""
    CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL);
    """,
        postgres="",
    ),
    # 4. The provider's clock of the webhook each status came from, and what the provider waits
    # for; existing rows get theirs from the webhooks they logged (see :func:`provider_clock`).
    Migration(
        sqlite="""
    ALTER TABLE sessions ADD COLUMN provider_updated_at REAL;
    ALTER TABLE sessions ADD COLUMN next_action TEXT;
    """,
        postgres="""
    ALTER TABLE sessions ADD COLUMN provider_updated_at DOUBLE PRECISION;
    ALTER TABLE sessions ADD COLUMN next_action TEXT;
    """,
    ),
    # 5. The history, the relay's deliveries, and what retention looks up by age.
    Migration(
        sqlite="""
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_session ON events (session_id, id);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        webhook_id INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        signature TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        retry_from REAL NOT NULL,
        last_attempt_at REAL,
        last_status INTEGER,
        claimed_until REAL
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_of_session ON deliveries (session_id, id) WHERE state = 'pending';
    CREATE INDEX deliveries_by_state ON deliveries (state, id);
    CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id);
    CREATE INDEX sessions_by_updated_at ON sessions (updated_at);
    """,
        postgres="""
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        session_id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_session ON events (session_id, id);
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        webhook_id BIGINT NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        signature TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        retry_from DOUBLE PRECISION NOT NULL,
        last_attempt_at DOUBLE PRECISION,
        last_status INTEGER,
        claimed_until DOUBLE PRECISION
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_of_session ON deliveries (session_id, id) WHERE state = 'pending';
    CREATE INDEX deliveries_by_state ON deliveries (state, id);
    CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id);
    CREATE INDEX sessions_by_updated_at ON sessions (updated_at);
    """,
    ),
    # 6. What each webhook says whatever its spelling, to know a copy serialised anew.
    Migration(
        sqlite="""
    ALTER TABLE webhooks ADD COLUMN meaning BLOB;
    CREATE INDEX webhooks_by_meaning ON webhooks (session_id, meaning);
    """,
        postgres="""
    ALTER TABLE webhooks ADD COLUMN meaning BYTEA;
    CREATE INDEX webhooks_by_meaning ON webhooks (session_id, meaning);
    """,
    ),
    # 7. A delivery's id for the partner is a random message id, unique beyond this database
    # (app/ids.py); one recorded before keeps the id its attempts went out with. One of the
    # bridge's own events carries its own body and no webhook.
    # SQLite's row ids are also never used twice from here on (AUTOINCREMENT): retention deletes
    # the newest rows of a quiet period too, and a delivery or history entry naming an old id
    # must never meet another row under it. The webhooks' count starts past every id a
    # delivery names, the deliveries' past every id the history names (retention deleted some
    # of those). PostgreSQL's sequences never hand out an id twice.
    Migration(
        sqlite="""
    CREATE TABLE webhooks_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        digest BLOB NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        body BLOB NOT NULL,
        meaning BLOB
    );
    INSERT INTO webhooks_new SELECT id, digest, session_id, type, received_at, body, meaning
        FROM webhooks;
    DROP TABLE webhooks;
    ALTER TABLE webhooks_new RENAME TO webhooks;
    CREATE INDEX webhooks_by_session ON webhooks (session_id, id);
    CREATE INDEX webhooks_by_received_at ON webhooks (received_at);
    CREATE INDEX webhooks_by_meaning ON webhooks (session_id, meaning);
    INSERT INTO sqlite_sequence (name, seq) SELECT 'webhooks', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'webhooks');
    UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT max(webhook_id) FROM deliveries), 0))
        WHERE name = 'webhooks';
    CREATE TABLE events_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    INSERT INTO events_new SELECT id, session_id, at, kind, detail FROM events;
    DROP TABLE events;
    ALTER TABLE events_new RENAME TO events;
    CREATE INDEX events_by_session ON events (session_id, id);
    CREATE TABLE deliveries_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id INTEGER,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        signature TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        retry_from REAL NOT NULL,
        last_attempt_at REAL,
        last_status INTEGER,
        claimed_until REAL,
        message_id TEXT NOT NULL UNIQUE,
        body BLOB
    );
    INSERT INTO deliveries_new SELECT id, webhook_id, session_id, type, received_at, signature,
        state, attempts, next_attempt_at, retry_from, last_attempt_at, last_status, claimed_until,
        CAST(id AS TEXT), NULL
        FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_new RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_of_session ON deliveries (session_id, id) WHERE state = 'pending';
    CREATE INDEX deliveries_by_state ON deliveries (state, id);
    CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id);
    INSERT INTO sqlite_sequence (name, seq) SELECT 'deliveries', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'deliveries');
    UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT max(CAST(json_extract(detail,
        '$.delivery_id') AS INTEGER)) FROM events WHERE kind = 'relay'), 0))
        WHERE name = 'deliveries';
    """,
        postgres="""
    ALTER TABLE deliveries ADD COLUMN message_id TEXT;
    UPDATE deliveries SET message_id = id::text;
    ALTER TABLE deliveries ALTER COLUMN message_id SET NOT NULL;
    CREATE UNIQUE INDEX deliveries_by_message ON deliveries (message_id);
    ALTER TABLE deliveries ALTER COLUMN webhook_id DROP NOT NULL;
    ALTER TABLE deliveries ALTER COLUMN signature DROP NOT NULL;
    ALTER TABLE deliveries ADD COLUMN body BYTEA;
    """,
    ),
    # 8. A session's deliveries in every state, newest first (the listing by session, and a
    # retry's earlier failed ones); deliveries_of_session holds only the pending ones.
    Migration(
        sqlite="""
    CREATE INDEX deliveries_by_session ON deliveries (session_id, id);
    """,
        postgres="""
    CREATE INDEX deliveries_by_session ON deliveries (session_id, id);
    """,
    ),
    # 9. One page at the bank at a time: the page that holds each session's bank step, and the
    # single-use links that move it to another browser (only a hash of each link's secret).
    Migration(
        sqlite="""
    CREATE TABLE step_holders (
        session_id TEXT PRIMARY KEY,
        page TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX step_holders_by_at ON step_holders (at);
    CREATE TABLE handoffs (
        digest BLOB PRIMARY KEY,
        session_id TEXT NOT NULL,
        return_url TEXT,
        expires_at REAL NOT NULL,
        claimed_at REAL
    );
    CREATE INDEX handoffs_by_expiry ON handoffs (expires_at);
    """,
        postgres="""
    CREATE TABLE step_holders (
        session_id TEXT PRIMARY KEY,
        page TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX step_holders_by_at ON step_holders (at);
    CREATE TABLE handoffs (
        digest BYTEA PRIMARY KEY,
        session_id TEXT NOT NULL,
        return_url TEXT,
        expires_at DOUBLE PRECISION NOT NULL,
        claimed_at DOUBLE PRECISION
    );
    CREATE INDEX handoffs_by_expiry ON handoffs (expires_at);
    """,
    ),
    # 10. What the bridge knows of each bank origin's frames (app.framing), for every instance.
    Migration(
        sqlite="""
    CREATE TABLE banks (
        origin TEXT PRIMARY KEY,
        looked_at REAL,
        headers TEXT,
        stalled INTEGER NOT NULL DEFAULT 0,
        framed_returns INTEGER NOT NULL DEFAULT 0,
        windowed_returns INTEGER NOT NULL DEFAULT 0
    );
    """,
        postgres="""
    CREATE TABLE banks (
        origin TEXT PRIMARY KEY,
        looked_at DOUBLE PRECISION,
        headers TEXT,
        stalled BIGINT NOT NULL DEFAULT 0,
        framed_returns BIGINT NOT NULL DEFAULT 0,
        windowed_returns BIGINT NOT NULL DEFAULT 0
    );
    """,
    ),
    # 11. PostgreSQL writes a webhook in one statement (see PostgresStore.record_webhook): the
    # store reads what the decision needs, the state machine decides in Python, and this function
    # writes what it decided under the session's lock, unless what it was decided from changed
    # meanwhile (then it writes nothing and answers false, and the store reads again). A later
    # change to these tables' columns replaces the function in its own migration.
    # SQLite's single writer decides and writes in one transaction already: nothing to do.
    Migration(
        sqlite="",
        postgres="""
    CREATE FUNCTION bridge_record_webhook(
        seen_session TEXT,          -- the session row's version (xmin) as read, NULL if none
        seen_forgotten BIGINT,      -- its latest 'forgotten' event as read, NULL if none
        seen_same_meaning BOOLEAN,  -- whether a webhook of the same meaning was logged
        seen_digest BOOLEAN,        -- whether these very bytes were logged: a duplicate
        w_digest BYTEA, w_session_id TEXT, w_type TEXT, w_received_at DOUBLE PRECISION,
        w_body BYTEA, w_meaning BYTEA,
        relay_message_id TEXT, relay_signature TEXT,  -- NULL when the webhook is not relayed
        -- The session after the webhook, when it changed (s_status NULL: nothing to write).
        s_session_id TEXT, s_status TEXT, s_reason TEXT, s_interaction TEXT,
        s_action_received_at DOUBLE PRECISION, s_action_expires_at DOUBLE PRECISION,
        s_returned_at DOUBLE PRECISION, s_payments TEXT, s_created_at DOUBLE PRECISION,
        s_updated_at DOUBLE PRECISION, s_provider_updated_at DOUBLE PRECISION,
        s_next_action TEXT,
        emitted_message_ids TEXT[], emitted_types TEXT[], emitted_bodies BYTEA[],
        announce BOOLEAN, channel TEXT,
        event_detail TEXT
    ) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
    DECLARE
        webhook_id BIGINT;
        due DOUBLE PRECISION;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(w_session_id, 0));
        IF (SELECT xmin::text FROM sessions WHERE session_id = w_session_id)
                IS DISTINCT FROM seen_session
            OR (SELECT max(id) FROM events WHERE session_id = w_session_id AND kind = 'forgotten')
                IS DISTINCT FROM seen_forgotten
            OR EXISTS (SELECT 1 FROM webhooks WHERE session_id = w_session_id
                AND meaning = w_meaning) <> seen_same_meaning
            OR EXISTS (SELECT 1 FROM webhooks WHERE digest = w_digest) <> seen_digest
        THEN
            RETURN false;
        END IF;
        -- Not due before an earlier pending delivery of the session (see sql.INSERT_DELIVERY).
        due := greatest(w_received_at, (SELECT max(next_attempt_at) FROM deliveries
            WHERE session_id = w_session_id AND state = 'pending'));
        IF NOT seen_digest THEN
            INSERT INTO webhooks (digest, session_id, type, received_at, body, meaning)
                VALUES (w_digest, w_session_id, w_type, w_received_at, w_body, w_meaning)
                RETURNING id INTO webhook_id;
        END IF;
        IF s_status IS NOT NULL THEN
            INSERT INTO sessions (session_id, status, reason, interaction, action_received_at,
                    action_expires_at, returned_at, payments, created_at, updated_at,
                    provider_updated_at, next_action)
                VALUES (s_session_id, s_status, s_reason, s_interaction, s_action_received_at,
                    s_action_expires_at, s_returned_at, s_payments, s_created_at, s_updated_at,
                    s_provider_updated_at, s_next_action)
                ON CONFLICT (session_id) DO UPDATE SET status = excluded.status,
                    reason = excluded.reason, interaction = excluded.interaction,
                    action_received_at = excluded.action_received_at,
                    action_expires_at = excluded.action_expires_at,
                    returned_at = excluded.returned_at, payments = excluded.payments,
                    updated_at = excluded.updated_at,
                    provider_updated_at = excluded.provider_updated_at,
                    next_action = excluded.next_action;
        END IF;
        IF webhook_id IS NOT NULL AND relay_signature IS NOT NULL THEN
            INSERT INTO deliveries (message_id, webhook_id, session_id, type, received_at,
                    signature, body, state, attempts, next_attempt_at, retry_from)
                VALUES (relay_message_id, webhook_id, w_session_id, w_type, w_received_at,
                    relay_signature, NULL, 'pending', 0, due, w_received_at);
        END IF;
        INSERT INTO deliveries (message_id, webhook_id, session_id, type, received_at,
                signature, body, state, attempts, next_attempt_at, retry_from)
            SELECT emitted.message_id, NULL, w_session_id, emitted.type, w_received_at, NULL,
                    emitted.body, 'pending', 0, due, w_received_at
                FROM unnest(emitted_message_ids, emitted_types, emitted_bodies)
                    WITH ORDINALITY AS emitted (message_id, type, body, position)
                ORDER BY emitted.position;
        INSERT INTO events (session_id, at, kind, detail)
            VALUES (w_session_id, w_received_at, 'webhook', event_detail);
        IF announce THEN
            PERFORM pg_notify(channel, w_session_id);
        END IF;
        RETURN true;
    END
    $$;
    """,
    ),
    # 12. The relay claims due deliveries in the order they fell due, reading none that waits
    # for a later attempt (see sql._claim_deliveries): the index gives that order, ties in id.
    Migration(
        sqlite="""
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending';
    """,
        postgres="""
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending';
    """,
    ),
    # 13. PostgreSQL writes the relay's outcomes a batch at a time (see
    # PostgresStore.finish_attempts): for each in order, what sql.FINISH_ATTEMPT,
    # sql.PUT_OFF_LATER and sql.INSERT_EVENT do for one, in one call; whether each was still
    # claimed, in the same order. SQLite's writer runs them as one job already: nothing to do.
    Migration(
        sqlite="",
        postgres="""
    CREATE FUNCTION bridge_finish_attempts(
        ids BIGINT[], claims DOUBLE PRECISION[], states TEXT[], ats DOUBLE PRECISION[],
        statuses INTEGER[], next_ats DOUBLE PRECISION[], details TEXT[]
    ) RETURNS BOOLEAN[] LANGUAGE plpgsql AS $$
    DECLARE
        recorded BOOLEAN[] := '{}';
        of_session TEXT;
    BEGIN
        FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
            UPDATE deliveries SET state = states[i], attempts = attempts + 1,
                    last_attempt_at = ats[i], last_status = statuses[i],
                    next_attempt_at = next_ats[i], claimed_until = NULL
                WHERE id = ids[i] AND claimed_until = claims[i]
                RETURNING session_id INTO of_session;
            recorded := recorded || FOUND;
            CONTINUE WHEN NOT FOUND;
            IF states[i] = 'pending' THEN  -- put off, it puts off its session's later ones
                UPDATE deliveries SET next_attempt_at = next_ats[i]
                    WHERE session_id = of_session AND state = 'pending' AND id > ids[i]
                        AND next_attempt_at < next_ats[i];
            END IF;
            INSERT INTO events (session_id, at, kind, detail)
                VALUES (of_session, ats[i], 'relay', details[i]);
        END LOOP;
        RETURN recorded;
    END
    $$;
    """,
    ),
    # 14. PostgreSQL plans the relay's claim without statistics of a delivery's state: analysed
    # while none was pending, they said none ever is, and the claim's look at a candidate's
    # session walked every pending delivery (deliveries_by_state) instead of the session's own
    # (deliveries_of_session). The statistics already taken go with the type's no-op change.
    Migration(
        sqlite="",
        postgres="""
    ALTER TABLE deliveries ALTER COLUMN state SET STATISTICS 0;
    ALTER TABLE deliveries ALTER COLUMN state TYPE TEXT;
    """,
    ),
)
DATED = 4  # the migration that added the provider's clock: sessions are dated after it

# PostgreSQL's versions as it recorded them before both engines shared one numbering: its
# version n then is POSTGRES_OWN_NUMBERS[n - 1] now (it had no version 3, the changes table).
# SQLite ran every step: its numbers are the shared ones.
POSTGRES_OWN_NUMBERS = (1, 2, 4, 5, 6, 7, 8)

# Dating the sessions stored before the provider's clock (see :func:`provider_clock`).
UNDATED_SESSIONS = (
    "SELECT session_id, status FROM sessions"
    " WHERE status IN ('pending', 'action_required', 'in_progress')"
)
SESSION_BODIES = "SELECT body FROM webhooks WHERE session_id = ? ORDER BY id"
DATE_SESSION = (
    "UPDATE sessions SET status = ?, provider_updated_at = ?, next_action = ? WHERE session_id = ?"
)


def provider_clock(status: str, bodies: list[bytes]) -> tuple[str, float | None, str | None]:
    """For a session stored before the provider's clock was kept: its status, and the time and
    next action of the newest logged webhook that asks for it. A hold the old version called
    ``in_progress`` (from ``ready_to_capture``) becomes ``authorized``."""
    asks_for = {Status(status)} | ({Status.AUTHORIZED} if status == Status.IN_PROGRESS else set())
    newest: tuple[float, str, str | None] | None = None
    for body in bodies:
        try:
            webhook = parse_webhook(json.loads(body), body)
        except (ValueError, MalformedWebhookError):
            continue
        target = lifecycle.target_of(webhook)
        when = webhook.updated_at
        if target is None or target.status not in asks_for or when is None:
            continue
        if newest is None or when >= newest[0]:
            newest = (when, target.status.value, webhook.next_action)
    if newest is None:
        return status, None, None
    return newest[1], newest[0], newest[2]
