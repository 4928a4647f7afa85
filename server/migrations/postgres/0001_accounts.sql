-- Accounts and password-reset tokens. Ids are UUID v4 strings and times are
-- unix milliseconds, so the SQLite schema and every query stay the same.

CREATE TABLE accounts (
    id            TEXT    PRIMARY KEY,
    -- The caller trims and lower-cases, so a plain unique index is enough.
    email         TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

CREATE TABLE password_reset_tokens (
    -- Only a hash of the token is stored; the link in the email holds the token.
    token_hash  TEXT    PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT  NULL,
    created_at  BIGINT  NOT NULL
);

-- Consuming a token invalidates the account's other tokens; this finds them.
CREATE INDEX password_reset_tokens_account_id ON password_reset_tokens (account_id);
