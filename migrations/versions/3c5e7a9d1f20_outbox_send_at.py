"""outbox send_at: when a delayed mail (deliver_later(wait=...)) is due

Revision ID: 3c5e7a9d1f20
Revises: 8bfbbcf211ba
Create Date: 2026-12-02 01:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3c5e7a9d1f20'
down_revision = '8bfbbcf211ba'
branch_labels = None
depends_on = None


def upgrade():
    """Add outbox_mails.send_at (app/mail/delivery.py OutboxMail); existing rows are due at once."""
    with op.batch_alter_table('outbox_mails', schema=None) as batch_op:
        batch_op.add_column(sa.Column('send_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    """Drop outbox_mails.send_at."""
    with op.batch_alter_table('outbox_mails', schema=None) as batch_op:
        batch_op.drop_column('send_at')
