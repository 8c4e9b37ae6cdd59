from alambic.cli import app

app(prog_name="alambic")
