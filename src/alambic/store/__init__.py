from alambic.store.ledger import Artifact, Item, Ledger, Run, Selected

__all__ = ["Artifact", "Item", "Ledger", "Run", "Selected"]
