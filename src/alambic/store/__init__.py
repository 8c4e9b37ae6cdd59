from alambic.store.ledger import Artifact, Item, Ledger, Run

__all__ = ["Artifact", "Item", "Ledger", "Run"]
