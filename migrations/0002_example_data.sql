-- A few rows so that `shapesync dev` has something to show at once.
INSERT INTO todos (id, owner_id, title, done, position) VALUES
    ('8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0001', 'alice', 'Buy milk', false, 1),
    ('8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0002', 'alice', 'Water the plants', true, 2),
    ('8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0003', 'bob', 'Book the dentist', false, 1);

INSERT INTO notes (id, owner_id, title, tags) VALUES
    ('5c2e9b1a-77d4-4c1b-8e0f-3b9a2d0c0001', 'alice', 'Shopping', '{home,errands}'),
    ('5c2e9b1a-77d4-4c1b-8e0f-3b9a2d0c0002', 'bob', 'Ideas', '{}');
