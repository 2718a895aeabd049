//! The world of the subquery tests (organisations, projects, members, todos) and the moves
//! every client must follow: one list, so each client kind is tested on the same sequence.

/// Organisations, their members, projects (each in an organisation, some archived), project
/// members with a role, and todos by project.
pub const SCHEMA: &str = "
    CREATE TABLE orgs (id int PRIMARY KEY, name text);
    CREATE TABLE org_members (org_id int, user_id text, PRIMARY KEY (org_id, user_id));
    CREATE TABLE projects (id int PRIMARY KEY, org_id int, archived bool NOT NULL DEFAULT false);
    CREATE TABLE members (project_id int, user_id text, role text NOT NULL DEFAULT 'dev',
        PRIMARY KEY (project_id, user_id));
    CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text, done bool NOT NULL DEFAULT false);
    INSERT INTO orgs VALUES (1, 'one'), (2, 'two'), (3, 'three');
    INSERT INTO projects SELECT g, 1 + g % 3, g % 5 = 0 FROM generate_series(1, 9) g;
    INSERT INTO members VALUES (1, 'u1', 'dev'), (2, 'u1', 'owner'), (3, 'u2', 'dev');
    INSERT INTO org_members VALUES (1, 'u1'), (2, 'u2');
    INSERT INTO todos SELECT g, 1 + g % 9, 'todo ' || g, g % 2 = 0 FROM generate_series(1, 60) g;";

/// (what, SQL) steps that move todos in and out of subquery shapes on that world: grants,
/// revocations, role changes, rows moving between projects, projects between organisations,
/// and transactions that revoke and grant again.
pub const MOVE_STEPS: &[(&str, &str)] = &[
    (
        "grant u1 project 4",
        "INSERT INTO members VALUES (4, 'u1', 'dev')",
    ),
    (
        "grant u2 project 5",
        "INSERT INTO members VALUES (5, 'u2', 'dev')",
    ),
    (
        "revoke u1 project 1",
        "DELETE FROM members WHERE project_id = 1 AND user_id = 'u1'",
    ),
    (
        "promote to owner",
        "UPDATE members SET role = 'owner' WHERE project_id = 3",
    ),
    (
        "hand a membership to another user",
        "UPDATE members SET user_id = 'u2' WHERE project_id = 4 AND user_id = 'u1'",
    ),
    (
        "move a todo out",
        "UPDATE todos SET project_id = 9 WHERE id = 4",
    ),
    (
        "move a todo in",
        "UPDATE todos SET project_id = 4 WHERE id = 5",
    ),
    (
        "finish todos",
        "UPDATE todos SET done = true WHERE id IN (5, 12, 13)",
    ),
    (
        "grant and write in one transaction",
        "BEGIN; INSERT INTO todos VALUES (100, 7, 'new', false); \
             INSERT INTO members VALUES (7, 'u1', 'dev'); \
             INSERT INTO todos VALUES (101, 7, 'newer', false); COMMIT",
    ),
    (
        "revoke, write, grant again in one transaction",
        "BEGIN; DELETE FROM members WHERE project_id = 7 AND user_id = 'u1'; \
             UPDATE todos SET title = 'while out' WHERE project_id = 7; \
             INSERT INTO members VALUES (7, 'u1', 'owner'); COMMIT",
    ),
    (
        "grant, write, revoke in one transaction",
        "BEGIN; INSERT INTO members VALUES (6, 'u1', 'dev'); \
             UPDATE todos SET title = 'while in' WHERE project_id = 6; \
             DELETE FROM members WHERE project_id = 6 AND user_id = 'u1'; COMMIT",
    ),
    (
        "join an organisation",
        "INSERT INTO org_members VALUES (3, 'u2')",
    ),
    (
        "archive a project",
        "UPDATE projects SET archived = true WHERE id = 2",
    ),
    (
        "move a project between organisations",
        "UPDATE projects SET org_id = 1 WHERE id = 4",
    ),
    (
        "leave an organisation",
        "DELETE FROM org_members WHERE org_id = 2",
    ),
    (
        "a new owner",
        "INSERT INTO members VALUES (8, 'u3', 'owner')",
    ),
    ("no owners left", "DELETE FROM members WHERE role = 'owner'"),
    (
        "delete moved rows",
        "DELETE FROM todos WHERE project_id = 4",
    ),
];
