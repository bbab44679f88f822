"""delivery receipts and Web Push: notification columns, subscriptions, pushes due

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("check_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("push_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("push", sa.String(length=8), nullable=False,
                                      server_default="auto"))
        batch_op.add_column(sa.Column("push_urgency", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("push_topic", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_notifications_check_at", ["check_at"], unique=False)
        batch_op.create_index("ix_notifications_push_at", ["push_at"], unique=False,
                              postgresql_where=sa.text("push_at IS NOT NULL"),
                              sqlite_where=sa.text("push_at IS NOT NULL"))

    op.create_table(
        "push_subscriptions",
        sa.Column("id", IdType, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=100), nullable=False),
        sa.Column("auth", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("endpoint"),
    )
    op.create_index("ix_push_subscriptions_user_id", "push_subscriptions", ["user_id"])

    op.create_table(
        "push_sends",
        sa.Column("id", IdType, autoincrement=True, nullable=False),
        sa.Column("notification_id", IdType, nullable=False),
        sa.Column("subscription_id", IdType, nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_push_sends_notification_id", "push_sends", ["notification_id"])
    op.create_index("ix_push_sends_subscription_id", "push_sends", ["subscription_id"])
    op.create_index("ix_push_sends_due_at", "push_sends", ["due_at"])


def downgrade():
    op.drop_table("push_sends")
    op.drop_table("push_subscriptions")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_push_at")
        batch_op.drop_index("ix_notifications_check_at")
        for column in ("push_topic", "push_urgency", "push", "push_at", "check_at",
                       "delivered_at"):
            batch_op.drop_column(column)
