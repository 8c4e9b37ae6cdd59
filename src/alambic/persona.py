"""A creator's voice, as synth trains it and eval scores it: the sample posts, and the messages a comment on a
post is answered from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alambic.config import PersonaSection
from alambic.errors import AlambicError
from alambic.models import Message

VOICE_EXAMPLES = 6  # of the creator's own replies, shown to the teacher writing in the creator's voice


def creator_posts(persona: PersonaSection, project_root: Path) -> list[str]:
    """The creator's sample posts: those in the config, then those of posts_file (separated by blank lines)."""
    posts = list(persona.posts)
    if persona.posts_file:
        path = project_root / persona.posts_file
        try:
            posts += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise AlambicError(f"synth.persona.posts_file: cannot read {path} ({exc})") from exc
    return posts


@dataclass(frozen=True)
class CreatorReply:
    post: str
    comment: str
    reply: str
    heldout: bool  # on a post that no training data was written from


def read_replies(path: Path) -> list[CreatorReply]:
    """The creator's replies, one JSON object a line: post, comment, reply, heldout (true or false)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AlambicError(f"synth.persona.replies_file: cannot read {path} ({exc})") from exc
    replies = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            replies.append(CreatorReply(row["post"], row["comment"], row["reply"], bool(row["heldout"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise AlambicError(f"{path}:{number}: expected post, comment, reply and heldout ({exc})") from exc
    split = {reply.heldout for reply in replies}
    if split != {True, False}:
        raise AlambicError(f"{path}: needs replies on held-out posts and on the others (heldout true and false)")
    return replies


def creator_replies(persona: PersonaSection, project_root: Path) -> list[CreatorReply]:
    return read_replies(project_root / persona.replies_file) if persona.replies_file else []


def voice_examples(replies: list[CreatorReply], count: int = VOICE_EXAMPLES) -> list[CreatorReply]:
    """Up to `count` of the creator's replies that are not held out, spread over the file (so over the posts)."""
    shown = [reply for reply in replies if not reply.heldout]
    return [shown[i * len(shown) // count] for i in range(count)] if len(shown) > count else shown


def reply_prompt(creator: str, post: str, comment: str) -> tuple[str, str]:
    """(system, user): what the student is trained and asked with to reply to a comment in the creator's voice."""
    return f"You are {creator}. Reply to comments on your posts in your own voice.", f"Post: {post}\nComment: {comment}"


def reply_messages(creator: str, post: str, comment: str) -> list[Message]:
    system, user = reply_prompt(creator, post, comment)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
