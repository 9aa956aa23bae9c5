"""The results branch: where things live on it (`layout`), writing it (`store`), reading it
(`read`), the site pages a change makes (`publish`), the whole site built from it (`build`) and
removing old runs (`retention`).
"""
