"""user control: preferences, collapsed pushes, device switches, /debug sign-in links

user_preferences; notifications.critical, collapse_key, collapse_template;
push_subscriptions.enabled; push_sends.deferred, collapse_key, folded; sign_in_links.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sign_in_links",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_sign_in_links_expires_at", "sign_in_links", ["expires_at"])
    op.create_table(
        "user_preferences",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    # Plain ADD COLUMNs with constant defaults: batch mode would recreate the table on
    # SQLite, and its copy of notifications would lose AUTOINCREMENT (ids never reused).
    op.add_column("notifications", sa.Column("critical", sa.Boolean(), nullable=False,
                                             server_default=sa.text("false")))
    op.add_column("notifications", sa.Column("collapse_key", sa.String(length=64),
                                             nullable=True))
    op.add_column("notifications", sa.Column("collapse_template", sa.String(length=100),
                                             nullable=True))
    op.add_column("push_subscriptions", sa.Column("enabled", sa.Boolean(), nullable=False,
                                                  server_default=sa.text("true")))
    op.add_column("push_sends", sa.Column("deferred", sa.Boolean(), nullable=False,
                                          server_default=sa.text("false")))
    op.add_column("push_sends", sa.Column("collapse_key", sa.String(length=64), nullable=True))
    op.add_column("push_sends", sa.Column("folded", sa.Integer(), nullable=False,
                                          server_default=sa.text("0")))
    op.create_index("ix_push_sends_collapse", "push_sends", ["subscription_id", "collapse_key"])

def downgrade():
    with op.batch_alter_table("push_sends", schema=None) as batch_op:
        batch_op.drop_index("ix_push_sends_collapse")
        for column in ("folded", "collapse_key", "deferred"):
            batch_op.drop_column(column)
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.drop_column("enabled")
    # SQLite recreates the table to drop columns: keep AUTOINCREMENT on the copy.
    with op.batch_alter_table("notifications", schema=None,
                              table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        for column in ("collapse_template", "collapse_key", "critical"):
            batch_op.drop_column(column)
    op.drop_table("user_preferences")
    op.drop_index("ix_sign_in_links_expires_at", table_name="sign_in_links")
    op.drop_table("sign_in_links")
