-- A transaction may append several audit events and then move the chain head once (a batch of pipeline stage
-- writes, a group of documents taken in), as SQLite's 0015 allows. The head still only moves forward, never
-- changes tenant, is never removed, and may only point at an event stored with exactly that sequence number and
-- hash.
CREATE OR REPLACE FUNCTION audit_heads_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.tenant_id = OLD.tenant_id AND NEW.seq > OLD.seq AND EXISTS (
            SELECT 1 FROM audit_events WHERE tenant_id = NEW.tenant_id AND seq = NEW.seq AND hash = NEW.hash
        ) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_heads only advance, to a stored event (% refused)', TG_OP;
END;
$$;
