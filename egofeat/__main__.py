from egofeat.cli import app

app(prog_name="egofeat")
