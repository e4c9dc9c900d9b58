-- A suspended account (API.md "Reports and moderation"): set by a moderator's `suspend_user`, cleared by
-- `POST /admin/users/{id}/unsuspend`. While set, the user's tokens and logins answer `403 account_suspended` and
-- their stories are left out of every read. A column, not a table: every read that already joins the author
-- checks it for free.
ALTER TABLE users ADD COLUMN suspended_at timestamptz;
