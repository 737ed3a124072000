"""outbox mails: each mail committed with its user, until the sweeper sees it sent

Revision ID: 8bfbbcf211ba
Revises: 96e7ae197974
Create Date: 2026-11-29 04:31:21.287528

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8bfbbcf211ba'
down_revision = '96e7ae197974'
branch_labels = None
depends_on = None


def upgrade():
    """Create the outbox_mails table (app/outbox.py OutboxMail)."""
    op.create_table('outbox_mails',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('recipient', sa.String(length=254), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('check_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sweeps', sa.Integer(), nullable=False),
    sa.Column('requeues', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    with op.batch_alter_table('outbox_mails', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_mails_check_after'), ['check_after'], unique=False)


def downgrade():
    """Drop the outbox_mails table."""
    with op.batch_alter_table('outbox_mails', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_mails_check_after'))

    op.drop_table('outbox_mails')
