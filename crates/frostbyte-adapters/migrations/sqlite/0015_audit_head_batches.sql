-- A transaction may append several audit events and then move the chain head once (the document pipeline
-- commits a batch of stage transitions together). The head still only moves forward, never changes tenant, and
-- may only point at an event stored with exactly that sequence number and hash.
DROP TRIGGER audit_heads_advance_only;

CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads
WHEN NEW.tenant_id <> OLD.tenant_id
    OR NEW.seq <= OLD.seq
    OR NOT EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = NEW.tenant_id AND seq = NEW.seq AND hash = NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'audit_heads only advance, to a stored event');
END;
