"""Replies to comments in a creator's voice."""

from __future__ import annotations

from pathlib import Path

from alambic.errors import AlambicError
from alambic.synth.engine import Engine
from alambic.synth.recipes.base import Recipe

COMMENTERS = (
    "a loyal fan who loved the post",
    "a sceptic who disagrees politely",
    "a newcomer asking a practical question",
    "someone who is rude and dismissive",
)


class PersonaVoice(Recipe):
    """Community comments on the creator's sample posts, answered in the creator's voice."""

    name = "persona-voice"
    kind = "persona-voice"
    prompt_names = ("comment.system", "comment.user", "voice.system", "voice.user")

    def __init__(self, engine: Engine, project_root: Path) -> None:
        persona = engine.settings.persona
        posts = list(persona.posts)
        if persona.posts_file:
            path = project_root / persona.posts_file
            try:
                posts += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise AlambicError(f"synth.persona.posts_file: cannot read {path} ({exc})") from exc
        if not posts:
            raise AlambicError("synth.persona.posts: the persona-voice recipe needs a few sample posts")
        self.posts = posts
        super().__init__(engine)

    def settings_key(self) -> object:
        return [super().settings_key(), self.engine.settings.persona.creator, self.posts]

    def max_groups(self) -> int:
        return len(self.posts) * len(COMMENTERS) * self.engine.settings.max_rounds

    async def run_group(self, index: int) -> int:
        post = self.posts[index % len(self.posts)]
        commenter = COMMENTERS[(index // len(self.posts)) % len(COMMENTERS)]
        variant = index // (len(self.posts) * len(COMMENTERS))
        creator = self.engine.settings.persona.creator
        comment_key = self.key("comment", post, commenter, variant)
        comment = await self.ask_text(comment_key, "comment", "comment", [], post=post, commenter=commenter)
        if comment is None:
            return 0
        key = self.key("reply", post, comment)
        extra = {"post": post, "commenter": commenter}
        values = {"post": post, "comment": comment, "creator": creator, "samples": self.posts[:5]}
        system = f"You are {creator}. Reply to comments on your posts in your own voice."
        trained_as = (system, f"Post: {post}\nComment: {comment}")
        return await self.answer(key, [index, 0], "voice", comment, None, [comment_key], extra, values, trained_as)
