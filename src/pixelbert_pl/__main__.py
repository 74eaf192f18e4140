from pixelbert_pl.cli import main

main()
