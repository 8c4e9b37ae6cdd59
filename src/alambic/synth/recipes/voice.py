"""Replies to comments in a creator's voice."""

from __future__ import annotations

from pathlib import Path

from alambic.errors import AlambicError
from alambic.persona import creator_posts, creator_replies, reply_prompt, voice_examples
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
        posts = creator_posts(engine.settings.persona, project_root)
        if not posts:
            raise AlambicError("synth.persona.posts: the persona-voice recipe needs a few sample posts")
        self.posts = posts
        self.examples = voice_examples(creator_replies(engine.settings.persona, project_root))
        super().__init__(engine)

    def settings_key(self) -> object:
        examples = [(example.comment, example.reply) for example in self.examples]
        return [super().settings_key(), self.engine.settings.persona.creator, self.posts, examples]

    def max_groups(self) -> int:
        return len(self.posts) * len(COMMENTERS) * self.engine.settings.max_rounds

    async def run_group(self, index: int) -> int:
        post = self.posts[index % len(self.posts)]
        commenter = COMMENTERS[(index // len(self.posts)) % len(COMMENTERS)]
        variant = index // (len(self.posts) * len(COMMENTERS))
        creator = self.engine.settings.persona.creator
        comment_key = self.key("comment", post, commenter, variant)
        comments = [example.comment for example in self.examples]
        comment = await self.ask_text(
            comment_key, "comment", "comment", [], post=post, commenter=commenter, comments=comments
        )
        if comment is None:
            return 0
        key = self.key("reply", post, comment)
        extra = {"post": post, "commenter": commenter}
        values = {
            "post": post,
            "comment": comment,
            "creator": creator,
            "samples": self.posts[:5],
            "replies": self.examples,
        }
        trained_as = reply_prompt(creator, post, comment)
        return await self.answer(key, [index, 0], "voice", comment, None, [comment_key], extra, values, trained_as)
