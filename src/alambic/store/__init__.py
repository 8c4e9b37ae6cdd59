from alambic.store.ledger import ApiKey, Artifact, Item, Ledger, Run, Selected

__all__ = ["ApiKey", "Artifact", "Item", "Ledger", "Run", "Selected"]
