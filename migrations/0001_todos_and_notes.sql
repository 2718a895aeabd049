-- The example application of shapesync: a small offline-first notes-and-tasks app.
-- `shapesync dev` applies the files of this folder in order and records them, so a second
-- start applies only new files. The proxy's own objects (slot, publication, the `shapesync`
-- schema) are not here: the proxy creates and upgrades them itself.

-- owner_id is the identity provider's subject (the JWT `sub` claim), which is not always a
-- uuid (`auth0|5f7c…`), hence text.

CREATE TABLE todos (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    text NOT NULL CHECK (owner_id <> ''),
    title       text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 1000),
    done        boolean NOT NULL DEFAULT false,
    -- Ordering within a list; clients insert between two positions by averaging them.
    position    double precision NOT NULL DEFAULT 0,
    -- Last-write-wins clock: set to the writer's timestamp by /v1/mutations, to now() by the
    -- trigger below for plain SQL writes.
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Tombstone: a deleted todo keeps its row so late, older writes cannot resurrect it.
    deleted_at  timestamptz
);

CREATE INDEX todos_owner_position_idx ON todos (owner_id, position) WHERE deleted_at IS NULL;
CREATE INDEX todos_deleted_at_idx ON todos (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE notes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    text NOT NULL CHECK (owner_id <> ''),
    title       text NOT NULL DEFAULT '' CHECK (char_length(title) <= 1000),
    -- A Yjs document (its encoded state); shapesync merges updates into it, never overwrites.
    body        bytea,
    tags        text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 64),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

CREATE INDEX notes_owner_idx ON notes (owner_id) WHERE deleted_at IS NULL;
CREATE INDEX notes_tags_idx ON notes USING gin (tags);
CREATE INDEX notes_deleted_at_idx ON notes (deleted_at) WHERE deleted_at IS NOT NULL;

-- Plain SQL writes count as writes of every column at the row's updated_at, so keep it
-- current. Writers that set updated_at themselves (shapesync's mutations do) keep their value.
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER todos_touch_updated_at BEFORE UPDATE ON todos
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER notes_touch_updated_at BEFORE UPDATE ON notes
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
