-- Plain SQL writes count per column: besides keeping updated_at current, the trigger tells
-- shapesync which columns a plain UPDATE changed (shapesync.note_plain_write, created by the
-- proxy), so a device's edit of another column still wins. An UPDATE that changes nothing is
-- no write and leaves updated_at alone.
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('shapesync.lww_write', true) = 'on' OR to_jsonb(NEW) = to_jsonb(OLD) THEN
        RETURN NEW;
    END IF;
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    -- Absent once `shapesync uninstall` has run.
    IF to_regprocedure('shapesync.note_plain_write(oid, jsonb, jsonb, text)') IS NOT NULL THEN
        PERFORM shapesync.note_plain_write(TG_RELID, to_jsonb(OLD), to_jsonb(NEW), 'updated_at');
    END IF;
    RETURN NEW;
END
$$;
