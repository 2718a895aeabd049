-- Shared projects: a todo may belong to a project, and every member of the project syncs it.
-- A device follows "the todos of every project I am a member of" with one shape whose `where`
-- has a subquery; granting or revoking a membership moves the project's todos onto or off the
-- member's devices live (README, "Subqueries: relational shapes"). rules.example.toml shows
-- the same as an auth rule.

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project_members (
    project_id  uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    -- The identity provider's subject, as todos.owner_id.
    user_id     text NOT NULL CHECK (user_id <> ''),
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    PRIMARY KEY (project_id, user_id)
);

CREATE INDEX project_members_user_idx ON project_members (user_id);

-- NULL: a personal todo, visible to its owner only.
ALTER TABLE todos ADD COLUMN project_id uuid REFERENCES projects ON DELETE SET NULL;
CREATE INDEX todos_project_idx ON todos (project_id) WHERE deleted_at IS NULL;

INSERT INTO projects (id, name) VALUES
    ('3b0e6c52-1d2f-4c8e-9a0b-5e1f2d3c0001', 'Garden');
INSERT INTO project_members (project_id, user_id, role) VALUES
    ('3b0e6c52-1d2f-4c8e-9a0b-5e1f2d3c0001', 'alice', 'owner'),
    ('3b0e6c52-1d2f-4c8e-9a0b-5e1f2d3c0001', 'bob', 'member');
