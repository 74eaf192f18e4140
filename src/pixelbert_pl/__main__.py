from pixelbert_pl.cli import console

console()
