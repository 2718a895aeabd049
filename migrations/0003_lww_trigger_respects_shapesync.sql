-- shapesync's mutations set updated_at to the newest clock among the row's last-write-wins
-- registers, which may leave it unchanged (a mutation that only wins an older column). The
-- trigger of 0001 would then replace it with now(), which would look like a plain SQL write
-- to shapesync. Its writes mark their transaction with `shapesync.lww_write = on`: keep
-- their value. Plain SQL writes still get now() unless they set updated_at themselves.
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('shapesync.lww_write', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
